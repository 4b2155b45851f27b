"""A Prometheus scrape endpoint of its own for a stand-alone process (``safeguards node
--metrics-port``; ``safeguards classifier serve`` can take the same), and the classifier's
series, which the region process (``regions.process_metrics``) exports too.

A stand-alone process exports what the region process exports for the same part, under the same
names and labels, so one set of dashboards and alert rules covers a region run as one process or
as separate ones. The endpoint binds to loopback unless told otherwise (``--metrics-host``), is
served from a thread (a scrape reads plain counters) and holds no account id and no text.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

DEFAULT_METRICS_HOST = "127.0.0.1"
Family = CounterMetricFamily | GaugeMetricFamily

# ServiceStats and ScorerStats fields -> (metric name, help)
CLASSIFIER_COUNTERS = {
    "scored": ("safeguards_classifier_scored", "content messages scored"),
    "published": ("safeguards_classifier_published", "score signals published"),
    "retried": ("safeguards_classifier_retried", "content messages retried"),
    "dead_lettered": ("safeguards_classifier_dead_lettered", "content messages dead-lettered"),
    "classify_replies": ("safeguards_classifier_classify_replies",
                         "synchronous classify requests answered"),
    "shadow_failures": ("safeguards_classifier_shadow_failures", "shadow model failures"),
}
SCORER_COUNTERS = {
    "requests": ("safeguards_classifier_requests", "texts submitted to the model"),
    "batches": ("safeguards_classifier_batches", "inference batches run"),
    "windows": ("safeguards_classifier_windows", "128-token windows scored"),
    "overloaded": ("safeguards_classifier_overloaded", "texts refused: the scorer was full"),
    "inference_s": ("safeguards_classifier_inference_seconds",
                    "seconds spent in model inference"),
    "reused": ("safeguards_classifier_reused", "texts answered from recent results, no inference"),
    "urgent": ("safeguards_classifier_urgent", "texts batched ahead of the rest (triage)"),
    "kept_late": ("safeguards_classifier_kept_late",
                  "results computed after their caller stopped waiting, kept for reuse"),
    "joined": ("safeguards_classifier_joined",
               "texts answered by waiting for the other lane's computation of the same text"),
}


def classifier_families(region: str, service: Any) -> Iterator[Family]:
    """A classifier service's counters (``ClassifierService``: its stats and its scorers')."""
    stats = dataclasses.asdict(service.stats)
    for field, (name, text) in CLASSIFIER_COUNTERS.items():
        yield _one(CounterMetricFamily(name, text, labels=["region"]), [region], stats[field])
    errors = CounterMetricFamily("safeguards_classifier_classify_errors",
                                 "synchronous classify requests that failed",
                                 labels=["region", "reason"])
    for reason, n in dict(service.stats.classify_errors).items():
        errors.add_metric([region, reason], n)
    yield errors
    lanes = {"content": dataclasses.asdict(service.primary.stats)}
    if service.inline is not service.primary:
        lanes["inline"] = dataclasses.asdict(service.inline.stats)
    for field, (name, text) in SCORER_COUNTERS.items():
        family = CounterMetricFamily(name, text, labels=["region", "lane"])
        for lane, scorer_stats in lanes.items():
            family.add_metric([region, lane], scorer_stats[field])
        yield family
    triage = getattr(service, "triage", None)
    if triage is not None:  # content items by why they were scored first (or "ordinary")
        items = CounterMetricFamily("safeguards_classifier_triage_items",
                                    "content items by triage reason", labels=["region", "reason"])
        for reason, n in dict(triage.counts).items():
            items.add_metric([region, reason], n)
        yield items



def _one(family: Any, labels: list[str], value: float) -> Any:
    family.add_metric(labels, value)
    return family


class ClassifierCollector(Collector):
    """A classifier process's service (``ClassifierService``)."""

    def __init__(self, region: str, service: Any) -> None:
        self.region, self.service = region, service

    def collect(self) -> Iterator[Family]:
        yield from classifier_families(self.region, self.service)


@contextlib.contextmanager
def metrics_endpoint(port: int, host: str, *collectors: Collector
                     ) -> Iterator[CollectorRegistry | None]:
    """Serve the collectors' metrics on ``http://host:port/metrics`` while the block runs
    (``port`` 0: no endpoint, yields None)."""
    if not port:
        yield None
        return
    if not 0 < port < 65536:
        raise ValueError(f"--metrics-port must be 1..65535, got {port}")
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def add_metrics_arguments(parser: Any) -> None:
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on this port at /metrics "
                             "(default: off)")
    parser.add_argument("--metrics-host", default=DEFAULT_METRICS_HOST,
                        help="the metrics endpoint's address (default %(default)s; 0.0.0.0 "
                             "to be scraped from another host)")
