"""A node of one region: the partitions it owns, their actors, and the outbox relay.

``Node.run`` connects to the region's bus (the bus port, ``core.bus``: NATS JetStream in
production, the in-memory twin in tests), provisions its streams, then lets the ownership
loop start and stop partition workers as leases come and go. ``request_stop`` (SIGTERM) drains:
no new fetches, batches in hand finish and are acked, leases are released so that other nodes
take over at once, pending commands are relayed, then the connection is drained.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import anyio

from safeguards.actors.clock import Clock, SystemClock
from safeguards.actors.commit import GroupCommitter
from safeguards.actors.loading import is_store_failure
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.ownership import PartitionOwnership
from safeguards.actors.partition import PartitionWorker
from safeguards.actors.relay import OutboxRelay
from safeguards.actors.schema_gate import own_schemas
from safeguards.actors.settings import NodeSettings
from safeguards.core.bus import BusConnector, RegionBus
from safeguards.core.ids import validate_region
from safeguards.core.operators import InputChecks, MessageAuthority, OperatorAuthority
from safeguards.core.policy import Policy, default_policy
from safeguards.core.ports import EventStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Running:
    worker: PartitionWorker
    scope: anyio.CancelScope
    done: anyio.Event = field(default_factory=anyio.Event)


class Node:
    def __init__(self, *, region: str, partitions: int, bus: BusConnector, store: EventStore,
                 node_id: str | None = None, clock: Clock | None = None,
                 policy: Policy | None = None, settings: NodeSettings | None = None,
                 static_partitions: Iterable[int] | None = None,
                 operators: OperatorAuthority | None = None,
                 producers: MessageAuthority | None = None,
                 forwarders: MessageAuthority | None = None,
                 schemas: Mapping[str, int] | None = None) -> None:
        """``static_partitions`` pins the node to those partitions without leases (benchmarks,
        and the fault test of two nodes that both believe they own a partition). ``operators``
        checks operator actions (default: none is accepted), ``producers`` every other signal
        (default: not checked; see ``core.operators.InputChecks``)."""
        self.checks = InputChecks(operators, producers, forwarders)  # forwarders: core.homes
        self.region = validate_region(region)
        self.partitions = partitions
        self.bus_connector = bus
        self.store = store
        self.node_id = node_id or f"{region}-{uuid.uuid4().hex[:8]}"
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or default_policy()
        self.settings = settings or NodeSettings()
        # the event schema versions this node reads (``schema_gate``; tests play older nodes)
        self.schemas = dict(schemas) if schemas is not None else own_schemas()
        self.static_partitions = None if static_partitions is None else sorted(static_partitions)
        self.metrics = NodeMetrics()
        self.ownership: PartitionOwnership | None = None
        self.relay: OutboxRelay | None = None
        self.committer: GroupCommitter | None = None
        self.running: dict[int, _Running] = {}
        self._stop = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._bus: RegionBus | None = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def owned(self) -> list[int]:
        return sorted(self.running)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        async with self.bus_connector.connect(f"safeguards-node-{self.node_id}") as bus:
            await self._run(bus, task_status)

    async def _run(self, bus: RegionBus, task_status: anyio.abc.TaskStatus[None]) -> None:
        s = self.settings
        self._bus = bus
        await bus.provision()
        self.relay = OutboxRelay(store=self.store, commands=bus.commands, signals=bus.signals,
                                 metrics=self.metrics, poll_s=s.relay_poll_s, batch=s.relay_batch,
                                 store_timeout_s=s.store_timeout_s, reconnects=bus.reconnects,
                                 reconcile_s=s.reconcile_s)
        self.committer = GroupCommitter(self.store, timeout_s=s.store_timeout_s,
                                        max_appends=s.commit_max_appends,
                                        linger_s=s.commit_linger_s, retry_s=s.store_retry_s,
                                        retry_max_s=s.store_retry_max_s,
                                        is_store_failure=is_store_failure,
                                        on_committed=self.relay.offer,
                                        metrics=self.metrics,
                                        ack_delay_s=s.fault_ack_delay_s)

        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(bus.run_policy, self.store, self._apply_policy)
            await tg.start(self.relay.run)
            await tg.start(self.committer.run)
            if self.static_partitions is not None:
                for p in self.static_partitions:
                    await self._start_partition(p)
            else:
                leases = await bus.lease_table(s.lease_ttl_s)
                self.ownership = PartitionOwnership(
                    leases=leases, node_id=self.node_id, partitions=self.partitions,
                    ttl_s=s.lease_ttl_s, renew_s=s.lease_renew_s,
                    start=self._start_partition, stop=self._stop_partition,
                    abort=self._abort_partition, monotonic=self.clock.monotonic,
                    schemas=self.schemas,
                )
                ownership_scope = anyio.CancelScope()

                async def own(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                    with ownership_scope:
                        assert self.ownership is not None
                        await self.ownership.run(task_status=task_status)

                # started once its first tick is done: the peers it saw have been asked for
                # (``ownership``), so one that dies right after is evicted, not waited out
                await tg.start(own)
            task_status.started()
            await self._stop.wait()
            log.info("node %s draining", self.node_id)
            with anyio.CancelScope(shield=True), anyio.move_on_after(s.drain_timeout_s):
                # Every partition finishes its batch in hand at once (each may sit in a fetch's
                # long poll); then leases are released one by one without waiting again.
                for running in self.running.values():
                    running.worker.request_stop()
                if self.ownership is not None:
                    ownership_scope.cancel()
                    await self.ownership.shutdown()
                for p in list(self.running):
                    await self._stop_partition(p)
                await self.relay.flush()
            tg.cancel_scope.cancel()

    def _apply_policy(self, policy: Policy) -> None:
        """The region's policy changed: partitions decide by it from their next signal on."""
        self.policy = policy
        for running in self.running.values():
            running.worker.policy = policy

    async def _start_partition(self, partition: int) -> None:
        assert self._tg is not None and self._bus is not None
        previous = self.running.get(partition)
        if previous is not None:
            if not previous.scope.cancel_called:
                return
            # Aborted (its lease was lost) and still handing back its mail: the lease is ours
            # again, so wait for the old worker to end instead of finding it "running" and
            # leaving the partition to nobody once it does.
            await previous.done.wait()
        assert self.committer is not None
        worker = PartitionWorker(
            region=self.region, partitions=self.partitions, partition=partition,
            store=self.store, bus=self._bus,
            policy=self.policy, checks=self.checks, clock=self.clock,
            settings=self.settings, metrics=self.metrics, committer=self.committer,
        )
        running = _Running(worker, anyio.CancelScope())
        self.running[partition] = running

        async def run_worker() -> None:
            try:
                with running.scope:
                    await worker.run()
            finally:
                running.done.set()
                if self.running.get(partition) is running:
                    del self.running[partition]

        self._tg.start_soon(run_worker)
        log.info("node %s runs partition %d", self.node_id, partition)

    async def _stop_partition(self, partition: int) -> None:
        running = self.running.get(partition)
        if running is None:
            return
        running.worker.request_stop()
        with anyio.move_on_after(self.settings.drain_timeout_s):
            await running.done.wait()
        running.scope.cancel()
        await running.done.wait()

    def _abort_partition(self, partition: int) -> None:
        running = self.running.get(partition)
        if running is not None:
            running.scope.cancel()
