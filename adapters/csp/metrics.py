"""Prometheus metrics of the inline adapter.

The gate and the telemetry buffer keep plain integer counters; a collector turns them into
metric families at scrape time, so the serving path never takes a metrics-library lock for them.
Latency histograms are observed by the proxy and ext_proc around ``check`` and upstream calls.
In a worker of a multi-process proxy (``PROMETHEUS_MULTIPROC_DIR`` set) ``render`` answers for
every worker (``worker_metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from safeguards.adapters import tracing
from safeguards.adapters.csp.feed import EnforcementFeed
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.telemetry import Telemetry
from safeguards.adapters.csp.worker_metrics import SharedExposition, shared_directory

CHECK_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)


class _GateCollector(Collector):
    def __init__(self, gate: Gate, telemetry: Telemetry | None,
                 feed: EnforcementFeed | None) -> None:
        self.gate = gate
        self.telemetry = telemetry
        self.feed = feed

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        gate = self.gate
        decisions = CounterMetricFamily("safeguards_csp_decisions", "gate decisions",
                                        labels=["action", "reason"])
        for (action, reason), n in list(gate.counts.items()):
            decisions.add_metric([action, reason], n)
        yield decisions
        decided = CounterMetricFamily(
            "safeguards_csp_decisions_by_level", "gate decisions by the account's level",
            labels=["level"])
        refused = CounterMetricFamily(
            "safeguards_csp_refusals_by_level",
            "refusals (blocked, throttled, failed closed, stream stopped) by the account's level",
            labels=["level"])
        for level, (n_decided, n_refused) in enumerate(zip(gate.decided_by_level,
                                                           gate.refused_by_level, strict=True)):
            decided.add_metric([str(level)], n_decided)
            refused.add_metric([str(level)], n_refused)
        yield decided
        yield refused
        fallbacks = CounterMetricFamily(
            "safeguards_csp_fallbacks", "fail-open/closed fallbacks (stale cache, classifier)",
            labels=["cause", "mode"])
        for (cause, mode), n in list(gate.fallbacks.items()):
            fallbacks.add_metric([cause, mode], n)
        yield fallbacks
        yield GaugeMetricFamily("safeguards_csp_cache_accounts",
                                "accounts with an enforcement command in the cache",
                                value=gate.size)
        staleness = gate.staleness(gate_now())
        yield GaugeMetricFamily("safeguards_csp_cache_staleness_seconds",
                                "seconds since the enforcement stream last spoke",
                                value=staleness if staleness < 1e12 else -1.0)
        commands = CounterMetricFamily("safeguards_csp_commands", "enforcement commands",
                                       labels=["outcome"])
        commands.add_metric(["applied"], gate.commands_applied)
        commands.add_metric(["ignored_not_newer"], gate.commands_ignored)
        if self.feed is not None:
            commands.add_metric(["rejected"], sum(self.feed.rejected.values()))
            commands.add_metric(["handling_failed"], self.feed.callback_failures)
        yield commands
        if self.feed is not None:
            rejected = CounterMetricFamily(
                "safeguards_csp_commands_rejected",
                "enforcement messages refused (unsigned, bad signature, wrong subject, ...)",
                labels=["reason"])
            for reason, n in list(self.feed.rejected.items()):
                rejected.add_metric([reason], n)
            yield rejected
        verdicts = CounterMetricFamily("safeguards_csp_first_stage",
                                       "screened prompts by the cascade's first stage verdict "
                                       "(clear: no classifier call)", labels=["verdict"])
        for verdict, n in list(gate.first_stage_verdicts.items()):
            verdicts.add_metric([verdict], n)
        yield verdicts
        # process-wide (every adapter of the process reads peers' trace context: requests,
        # enforcement commands, content messages); only counted while tracing is on
        yield CounterMetricFamily("safeguards_adapters_malformed_traceparents",
                                  "traceparent headers from peers that were not W3C trace "
                                  "context (each started a new trace)",
                                  value=tracing.malformed_traceparents)
        if self.telemetry is not None:
            t = self.telemetry
            dropped = CounterMetricFamily("safeguards_csp_telemetry_dropped",
                                          "telemetry messages not sent", labels=["reason"])
            for reason, n in list(t.dropped.items()):
                dropped.add_metric([reason], n)
            yield dropped
            yield CounterMetricFamily("safeguards_csp_telemetry_sent",
                                      "telemetry messages published", value=t.sent)
            yield GaugeMetricFamily("safeguards_csp_telemetry_queued",
                                    "telemetry messages waiting in the buffer", value=t.queued)


class CspMetrics:
    def __init__(self, gate: Gate, telemetry: Telemetry | None = None,
                 feed: EnforcementFeed | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        collector = _GateCollector(gate, telemetry, feed)
        self.registry.register(collector)
        directory = shared_directory()
        # one of several workers: /metrics merges every worker's (the worker publishes)
        self.shared = SharedExposition(collector, directory) if directory else None
        self.check_seconds = Histogram("safeguards_csp_check_seconds", "gate check latency",
                                       buckets=CHECK_BUCKETS, registry=self.registry)
        self.upstream_errors = Counter("safeguards_csp_upstream_errors",
                                       "upstream failures seen by the proxy", ["kind"],
                                       registry=self.registry)
        self.rejected_requests = Counter("safeguards_csp_bad_requests",
                                         "requests refused as bad input", ["status"],
                                         registry=self.registry)
        self.streams_terminated = Counter("safeguards_csp_streams_terminated",
                                          "streams ended with stop_reason refusal", ["reason"],
                                          registry=self.registry)
        # ext_proc: requests its route table refused (not_found, method_not_allowed,
        # no_request_headers) and failures it answered fail-closed, by the message being handled
        self.extproc_denied = Counter("safeguards_csp_extproc_denied",
                                      "requests ext_proc refused off its route table",
                                      ["reason"], registry=self.registry)
        self.extproc_errors = Counter("safeguards_csp_extproc_errors",
                                      "unhandled errors ext_proc answered with a fail-closed 500",
                                      ["stage"], registry=self.registry)

        # requests refused by caller authentication, by reason (unsigned, bad_signature,
        # replayed, expired, ...): a signed assertion moved to another route, model or body
        # is a bad_signature
        self.caller_refused = Counter("safeguards_csp_caller_refused",
                                      "requests refused by caller authentication",
                                      ["reason"], registry=self.registry)

        # the region's nonce ledger did not answer (timeout, disconnected, no_ledger, ...):
        # refused (required) or taken on the host's table alone (local_only)
        self.nonce_ledger_unavailable = Counter(
            "safeguards_csp_nonce_ledger_unavailable",
            "caller assertions the region's nonce ledger did not answer for", ["reason", "action"],
            registry=self.registry)
        # the region's batch ledger could not write or read a record (timeout, disconnected,
        # no_ledger, jetstream_error, unsealable, malformed): op is put or get, or mark or
        # observed (a batch job's output noted as observed: job_outputs)
        self.batch_ledger_errors = Counter(
            "safeguards_csp_batch_ledger_errors",
            "batch records the region's batch ledger did not write or read", ["op", "reason"],
            registry=self.registry)
        # admitted batch prompts not stored on the content stream before the creation was
        # answered (timeout, disconnected, no_stream, jetstream_error): held in memory instead
        self.batch_prompts_unpublished = Counter(
            "safeguards_csp_batch_prompts_unpublished",
            "admitted batch prompts the content stream did not store at the batch's creation",
            ["reason"], registry=self.registry)
        # providers' batch jobs' outputs not observed (access_refused, missing, unreadable,
        # too_large, bad_location: the job's; malformed, duplicate, unstored: lines of it; busy,
        # not_running, error: the background observation's, left for the job's next poll)
        self.job_outputs_unobserved = Counter(
            "safeguards_csp_job_outputs_unobserved",
            "batch jobs' outputs, or lines of them, the gate could not observe", ["reason"],
            registry=self.registry)

    def count_caller_refused(self, reason: str) -> None:
        self.caller_refused.labels(reason).inc()

    def count_ledger_unavailable(self, reason: str, action: str) -> None:
        self.nonce_ledger_unavailable.labels(reason, action).inc()

    def count_batch_ledger_error(self, op: str, reason: str) -> None:
        self.batch_ledger_errors.labels(op, reason).inc()

    def render(self) -> bytes:
        if self.shared is not None:
            return self.shared.render()
        return generate_latest(self.registry)
