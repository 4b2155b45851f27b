"""Composition of a region's account-actor nodes: migrated store, nodes, drain.

``run_node`` is one process's node (``safeguards node``); ``RegionNodes`` runs several nodes of
one region in one process (``safeguards run`` starts two per region), sharing one store pool.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import uuid
from collections.abc import Callable

import anyio
import anyio.abc

from safeguards.actors.node import Node
from safeguards.actors.ownership import owner_of
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.producer_auth import load_forwarders, load_producer_keys
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.heap import settle_heap
from safeguards.adapters.metrics_endpoint import metrics_endpoint
from safeguards.adapters.operators import OperatorRegistry
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.policy import Policy
from safeguards.regions.config import RegionConfig
from safeguards.regions.metrics_endpoint import NodeCollector
from safeguards.regions.process_metrics import watch_backlog
from safeguards.regions.supervision import Supervisor

MIGRATE_TIMEOUT_S = 120.0

log = logging.getLogger(__name__)


async def run_node(region: str, nats_url: str, database_url: str, node_id: str | None,
                   partitions: int, settings: NodeSettings | None = None,
                   stats_interval_s: float = 0.0, peers: tuple[str, ...] = (), *,
                   metrics_port: int = 0, metrics_host: str = "127.0.0.1",
                   backlog_interval_s: float = 5.0) -> dict[str, int]:
    """Migrate the region's store, run a node until SIGTERM/SIGINT, drain, return its counters.
    ``peers``: the regions whose forwarded scores of this region's accounts it accepts;
    ``metrics_port``: serve its metrics there (``adapters.metrics_endpoint``; 0: not)."""
    with anyio.fail_after(MIGRATE_TIMEOUT_S):
        await migrate(database_url)
    async with PostgresEventStore(region, database_url) as store:
        node = Node(region=region, partitions=partitions, bus=NatsBus(nats_url, region),
                    store=store, node_id=node_id, settings=settings,
                    operators=OperatorRegistry(region), producers=load_producer_keys(region),
                    forwarders=load_forwarders(region, peers))
        backlog: dict[str, float] = {}
        watching = anyio.CancelScope()

        async def watch() -> None:  # the relay's backlog, for the metrics endpoint
            with watching:
                await watch_backlog(region, store.engine, backlog, backlog_interval_s)

        with metrics_endpoint(metrics_port, metrics_host,
                              NodeCollector(region, lambda: [node], backlog)) as exported:
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)
                if exported is not None:
                    tg.start_soon(watch)
                settle_heap()  # start-up is done: later collections only walk the working set
                print(json.dumps({"node": node.node_id, "region": region, "ready": True}),
                      flush=True)
                await _until_stopped(node, tg, stats_interval_s)
                watching.cancel()
        return node.metrics.snapshot()


async def _until_stopped(node: Node, tg: anyio.abc.TaskGroup, stats_interval_s: float) -> None:
    """Print the node's counters every ``stats_interval_s`` (0: never) until SIGTERM/SIGINT,
    then ask the node to stop."""
    stats_scope = anyio.CancelScope()

    async def report() -> None:
        # A counters line on stdout: what supervisors (and fault tests that SIGKILL this
        # process) read; it holds no account ids and no content.
        with stats_scope:
            while True:
                await anyio.sleep(stats_interval_s)
                print(json.dumps({"stats": node.metrics.snapshot(),
                                  "partitions": node.owned}), flush=True)

    if stats_interval_s > 0:
        tg.start_soon(report)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            node.request_stop()
            break
    stats_scope.cancel()


CONVERGE_TIMEOUT_S = 20.0


class RegionNodes:
    """``count`` nodes of one region in this process; they split its partitions by lease."""

    def __init__(self, config: RegionConfig, count: int = 2,
                 settings: NodeSettings | None = None, policy: Policy | None = None) -> None:
        """``policy``: what the nodes decide by until the region's policy history has one."""
        self.config = config
        self.policy = policy
        self.count = count
        self.settings = settings
        self.nodes: list[Node] = []
        self.supervisor = Supervisor(config.name)  # a crashed node restarts, counted
        self._stop = anyio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def _settled(self) -> None:
        """Wait until the nodes own their partitions the way rendezvous hashing spreads them:
        the first node to start takes every partition until the others' heartbeats show, then
        hands half over, and a signal that arrives during a handover waits for it (about a
        second). Traffic should meet the steady state. Nodes of this region in other processes
        change the spread: then this gives up after CONVERGE_TIMEOUT_S and says so."""
        ids = [n.node_id for n in self.nodes]
        partitions = self.config.partitions
        want = {p: owner_of(p, ids) for p in range(partitions)}
        with anyio.move_on_after(CONVERGE_TIMEOUT_S):
            while True:
                have = {p: n.node_id for n in self.nodes for p in n.owned}
                if have == want and sum(len(n.owned) for n in self.nodes) == partitions:
                    return
                await anyio.sleep(0.05)
        log.warning("region %s: partition ownership did not settle within %.0f s (nodes of "
                    "this region in other processes?)", self.config.name, CONVERGE_TIMEOUT_S)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        cfg = self.config
        with anyio.fail_after(MIGRATE_TIMEOUT_S):
            await migrate(cfg.database_url)
        async with PostgresEventStore(cfg.name, cfg.database_url) as store:
            self.nodes = [self._node(i, store) for i in range(self.count)]

            first = [True] * self.count

            def incarnation(i: int) -> Callable[[], Node]:
                def make() -> Node:  # the node made above, then a fresh one per restart
                    if not first[i]:
                        self.nodes[i] = self._node(i, store)
                    first[i] = False
                    return self.nodes[i]
                return make

            async with anyio.create_task_group() as tg:
                for i in range(self.count):
                    await tg.start(functools.partial(self.supervisor.keep_running,
                                                     f"node {i}", incarnation(i)))
                await self._settled()
                task_status.started()
                await self._stop.wait()
                self.supervisor.request_stop()
                for node in self.nodes:
                    node.request_stop()

    def _node(self, i: int, store: PostgresEventStore) -> Node:
        cfg = self.config
        return Node(region=cfg.name, partitions=cfg.partitions,
                    bus=NatsBus(cfg.nats_url, cfg.name), store=store,
                    node_id=f"{cfg.name}-{i}-{uuid.uuid4().hex[:6]}",
                    settings=self.settings, policy=self.policy,
                    operators=OperatorRegistry(cfg.name),
                    producers=load_producer_keys(cfg.name),
                    forwarders=load_forwarders(cfg.name, cfg.peers))
