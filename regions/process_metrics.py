"""Prometheus metrics of a region process (``safeguards region``): its actor nodes, outbox relay,
classifier adapter and supervisor, exported on the process's one scrape endpoint (the inline
proxy's ``/metrics``, which already carries the gate's), so every process of the service has
one.

The components keep plain counters (``NodeMetrics``, ``ServiceStats``, ``ScorerStats``); a
collector reads them at scrape time. The relay's backlog (enforcement commands committed and not
yet published, and the age of the oldest: the enforcement lag) is read from the region's store
every few seconds by :meth:`RegionMetrics.watch_backlog`. No label holds an account id or text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from safeguards.actors import tracing as actor_tracing
from safeguards.adapters.metrics_endpoint import Family, classifier_families

log = logging.getLogger(__name__)

# NodeMetrics fields -> (metric name, help); the relay's own under safeguards_relay_
NODE_COUNTERS = {
    "received": ("safeguards_node_signals_received", "signals taken from the input streams"),
    "committed": ("safeguards_node_signals_committed", "signals whose events were committed"),
    "duplicates": ("safeguards_node_duplicates", "signals the inbox already held"),
    "conflicts": ("safeguards_node_version_conflicts", "appends that lost a version race"),
    "dead_lettered": ("safeguards_node_dead_lettered", "signals sent to the dead letters"),
    "decide_errors": ("safeguards_node_decide_errors", "decisions that raised a coding error"),
    "redelivery_requested": ("safeguards_node_naks", "signals handed back for redelivery"),
    "store_failures": ("safeguards_node_store_failures", "store calls that failed"),
    "store_refused": ("safeguards_node_store_refused", "appends refused as malformed"),
    "bus_failures": ("safeguards_node_bus_failures", "bus calls that failed"),
    "passivated": ("safeguards_node_passivated", "actors passivated"),
    "mailbox_full": ("safeguards_node_mailbox_full", "batches parked behind a full mailbox"),
    "batches": ("safeguards_node_commit_batches", "commit cycles"),
    "commands_published": ("safeguards_relay_commands_published",
                           "enforcement commands confirmed by JetStream"),
    "fast_path_overflow": ("safeguards_relay_fast_path_overflow",
                           "commands left to the relay's slow path"),
    "commands_repaired": ("safeguards_relay_commands_repaired",
                          "newest commands re-published after the broker lost them"),
}


def node_families(region: str, nodes: list[Any]) -> Iterator[Family]:
    """The counters of a process's actor nodes (and their relays), one series per node."""
    for field, (name, text) in NODE_COUNTERS.items():
        family = CounterMetricFamily(name, text, labels=["region", "node"])
        for node in nodes:
            family.add_metric([region, node.node_id], getattr(node.metrics, field))
        yield family
    owned = GaugeMetricFamily("safeguards_node_partitions_owned",
                              "input partitions a node holds the lease of",
                              labels=["region", "node"])
    for node in nodes:
        owned.add_metric([region, node.node_id], len(node.owned))
    yield owned
    # the process's nodes together (the actors' counter is one per process)
    yield _one(CounterMetricFamily("safeguards_node_malformed_traceparents",
                                   "signals whose traceparent header was not W3C trace "
                                   "context (each decision a new trace)",
                                   labels=["region"]), [region],
               actor_tracing.malformed_traceparents)


def backlog_families(region: str, backlog: dict[str, float]) -> Iterator[Family]:
    """The relay's backlog as :func:`watch_backlog` last read it."""
    for key, text in (("pending", "enforcement commands committed, not yet published"),
                      ("oldest_s", "age of the oldest unpublished enforcement command "
                                   "(the enforcement lag; 0: none)")):
        name = ("safeguards_relay_backlog" if key == "pending"
                else "safeguards_relay_backlog_oldest_seconds")
        yield _one(GaugeMetricFamily(name, text, labels=["region"]), [region],
                   backlog.get(key, 0.0))
    yield _one(GaugeMetricFamily("safeguards_relay_backlog_read_failures",
                                 "backlog reads from the store that failed",
                                 labels=["region"]), [region], backlog.get("failures", 0.0))


class RegionCollector(Collector):
    def __init__(self, stack: Any, backlog: dict[str, float]) -> None:
        self.stack = stack
        self.backlog = backlog

    def collect(self) -> Iterator[Family]:
        region = self.stack.config.name
        yield from node_families(region, list(self.stack.nodes.nodes))
        restarts = CounterMetricFamily("safeguards_supervisor_restarts",
                                       "components restarted after a crash",
                                       labels=["region", "component"])
        for component, n in dict(self.stack.nodes.supervisor.restarts).items():
            restarts.add_metric([region, component], n)
        yield restarts
        if self.stack.classifier is not None:
            yield from classifier_families(region, self.stack.classifier)
        yield from backlog_families(region, self.backlog)


def _one(family: Any, labels: list[str], value: float) -> Any:
    family.add_metric(labels, value)
    return family


class RegionMetrics:
    """Registers the region's collector on the proxy's registry and keeps the backlog fresh."""

    def __init__(self, stack: Any, interval_s: float = 5.0) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.backlog: dict[str, float] = {}
        self._scope = anyio.CancelScope()
        stack.proxy.metrics.registry.register(RegionCollector(stack, self.backlog))

    def stop(self) -> None:
        self._scope.cancel()

    async def watch_backlog(self) -> None:
        cfg = self.stack.config
        from safeguards.adapters.store import PostgresEventStore

        store = PostgresEventStore(cfg.name, cfg.database_url, pool_size=1)
        try:
            with self._scope:
                await watch_backlog(cfg.name, store.engine, self.backlog, self.interval_s)
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()


async def watch_backlog(region: str, engine: Any, backlog: dict[str, float],
                        interval_s: float) -> None:
    """Read the relay's backlog from the region's store into ``backlog`` every ``interval_s``
    until cancelled; a failed read is counted (``failures``) and logged."""
    from sqlalchemy.exc import SQLAlchemyError

    from safeguards.core.errors import SafeguardsError
    from safeguards.ops.console.reads import new_health, store_health

    while True:
        figures = new_health()
        try:
            with anyio.fail_after(interval_s):
                await store_health(engine, figures)
        except (SafeguardsError, SQLAlchemyError, OSError, TimeoutError):
            # counted and logged: an unreadable backlog is itself an alert
            backlog["failures"] = backlog.get("failures", 0.0) + 1
            log.warning("region %s: could not read the relay backlog", region, exc_info=True)
        else:
            backlog["pending"] = float(figures.outbox_pending)
            backlog["oldest_s"] = figures.outbox_oldest_s or 0.0
        await anyio.sleep(interval_s)
