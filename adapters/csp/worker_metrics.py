"""One ``/metrics`` for all the proxy's worker processes (prometheus_client multiprocess mode).

``workers`` starts its processes with ``PROMETHEUS_MULTIPROC_DIR`` naming a directory it made
for this run (and removes at stop), so each worker's library metrics (the check-latency
histogram, the upstream-error and refusal counters) are written to its own memory-mapped files
there. The gate's own counters are plain integers read by a collector at scrape time
(``metrics``); a worker copies that collector's samples into files of its own (``gate<pid>``)
every ``PUBLISH_EVERY_S`` and just before it answers a scrape. A scrape of any worker merges
every worker's files (``MultiProcessCollector``): counters and histograms are summed, gauges by
their mode (``GAUGE_MODES``). What another worker counted reaches a scrape within
``PUBLISH_EVERY_S``; what the answering worker counted is current.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_EVERY_S = 1.0

# How the workers' values of a gauge become one (the live modes: a worker's files leave with it).
# Every worker reads the whole enforcement stream, so each holds the region's accounts: the
# largest cache is the region's; the stalest worker is the one to alert on (a worker that never
# heard the stream reports -1, which shows only while no worker has); the buffers add up.
# A gauge not named here is exposed once per worker, with a ``pid`` label.
GAUGE_MODES: Mapping[str, str] = {
    "safeguards_csp_cache_accounts": "livemax",
    "safeguards_csp_cache_staleness_seconds": "livemax",
    "safeguards_csp_telemetry_queued": "livesum",
}


def shared_directory() -> str | None:
    """The workers' metrics directory, when this process is one of several workers."""
    return os.environ.get(MULTIPROC_ENV) or None


@contextlib.contextmanager
def exported_to_children(directory: str) -> Iterator[None]:
    """``PROMETHEUS_MULTIPROC_DIR`` set while processes are spawned (a spawned interpreter reads
    it when it first imports prometheus_client), then as it was."""
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        if previous is None:
            del os.environ[MULTIPROC_ENV]
        else:
            os.environ[MULTIPROC_ENV] = previous


class SharedExposition:
    """A worker's side of the merged ``/metrics``: publishes its collector, renders everyone's."""

    def __init__(self, collector: Collector, directory: str,
                 gauge_modes: Mapping[str, str] = GAUGE_MODES) -> None:
        if not getattr(values.ValueClass, "_multiprocess", False):
            # the library chose its value class when first imported, before the directory was
            # named: the histograms and counters would stay in this process only
            raise RuntimeError(f"{MULTIPROC_ENV} must be set before prometheus_client is "
                               "imported (workers set it for the processes they spawn)")
        self.collector = collector
        self.gauge_modes = gauge_modes
        self.registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
        pid = os.getpid()
        # The collector's samples go to files apart from the library's own (``counter_<pid>``):
        # one process must not map one file twice.
        value_class: Callable[..., Any] = values.MultiProcessValue(  # type: ignore[no-untyped-call]
            lambda: f"gate{pid}")
        self._value_class = value_class
        self._values: dict[tuple[str, str, tuple[str, ...]], Any] = {}

    def publish(self) -> None:
        """Write the collector's current samples to this worker's files."""
        for family in self.collector.collect():
            kind = family.type
            if kind not in ("counter", "gauge"):
                raise TypeError(f"{family.name}: a {kind} cannot be shared between workers")
            mode = self.gauge_modes.get(family.name, "liveall") if kind == "gauge" else ""
            for sample in family.samples:
                if kind == "counter" and not sample.name.endswith("_total"):
                    continue  # _created: the worker's own start, meaningless summed
                names = tuple(sorted(sample.labels))
                labels = tuple(sample.labels[n] for n in names)
                key = (family.name, sample.name, labels)
                value = self._values.get(key)
                if value is None:
                    value = self._value_class(kind, family.name, sample.name, names, labels,
                                              family.documentation, multiprocess_mode=mode)
                    self._values[key] = value
                value.set(sample.value)

    def render(self) -> bytes:
        """Every worker's metrics, merged (this worker's gate counters as of now)."""
        self.publish()
        return generate_latest(self.registry)

    async def keep_published(self, every_s: float = PUBLISH_EVERY_S) -> None:
        """Publish until cancelled; a failed publish is logged and tried again next time."""
        while True:
            await anyio.sleep(every_s)
            try:
                self.publish()
            except OSError:
                log.exception("publishing this worker's gate metrics failed")
