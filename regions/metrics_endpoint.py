"""A Prometheus scrape endpoint of its own for a stand-alone process: ``safeguards node
--metrics-port`` and ``safeguards classifier serve --metrics-port`` (off unless given).

They export what the region process (``regions.process_metrics``) exports for the same parts,
with the same names and labels, so one set of dashboards and alert rules covers a region run as
one process or as separate ones: a node's counters and partitions, and its relay's backlog read
from the region's store; a classifier's counters and its scorers'. The endpoint binds to
loopback unless told otherwise (``--metrics-host``), is served from a thread (the scrape reads
plain counters) and holds no account id and no text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from safeguards.regions.process_metrics import (
    Family,
    backlog_families,
    classifier_families,
    node_families,
)

DEFAULT_METRICS_HOST = "127.0.0.1"


class NodeCollector(Collector):
    """A node process's nodes (``nodes()`` at scrape time) and its relay's backlog."""

    def __init__(self, region: str, nodes: Callable[[], list[Any]],
                 backlog: dict[str, float]) -> None:
        self.region, self.nodes, self.backlog = region, nodes, backlog

    def collect(self) -> Iterator[Family]:
        yield from node_families(self.region, self.nodes())
        yield from backlog_families(self.region, self.backlog)


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
