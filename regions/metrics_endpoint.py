"""The metrics endpoint of a stand-alone node process (``safeguards node --metrics-port``): its
node's counters and partitions, and its relay's backlog read from the region's store, under the
region process's names and labels (``regions.process_metrics``), served by
``adapters.metrics_endpoint``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.registry import Collector

from safeguards.adapters.metrics_endpoint import Family
from safeguards.regions.process_metrics import backlog_families, node_families


class NodeCollector(Collector):
    """A node process's nodes (``nodes()`` at scrape time) and its relay's backlog."""

    def __init__(self, region: str, nodes: Callable[[], list[Any]],
                 backlog: dict[str, float]) -> None:
        self.region, self.nodes, self.backlog = region, nodes, backlog

    def collect(self) -> Iterator[Family]:
        yield from node_families(self.region, self.nodes())
        yield from backlog_families(self.region, self.backlog)
