"""Fault injection with an end-to-end checker: lost 0, double-applied 0, every change emitted.

Nodes run as real processes (``python -m safeguards.regions.node_cli node``, the ``safeguards node``
command alone) so they can be SIGKILLed mid-batch; NATS and PostgreSQL are restarted under load in
tests that own their servers. Every test prints one ``FAULTS {...}`` line with its counts (run
with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import anyio
import asyncpg
import nats
import nats.errors
import pytest
from checker import CheckReport, check_end_to_end
from fault_harness import make_signals, store_failure_lines
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import APIError
from node_process import NodeProcess

from safeguards.actors.node import Node
from safeguards.actors.ownership import owner_of
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.leases import LeaseBucket
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.errors import SafeguardsError
from safeguards.core.events import Signal
from safeguards.core.subjects import inputs_subject

from bus_support import producer_headers

pytestmark = pytest.mark.slow

P = 8
WINDOW = 32  # the split-brain test's publishes awaiting their acks at once
RECOVERY_BOUND_S = 20.0  # measured 3.8 s after a crash, 2.0 s after a fast shutdown; generous


class PostgresServer(Protocol):
    admin_url: str

    def database_url(self, name: str) -> str: ...


async def create_database(admin_url: str, server_url: str) -> str:
    name = f"sg_faults_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    """The test's folder for node logs; node processes a failed test left running are killed
    (they would take CPU from every later test of the run)."""
    yield tmp_path
    NodeProcess.reap_started()


class Harness:
    """Publishes signals (retrying until JetStream confirms each), collects commands, checks."""

    def __init__(self, nc: Client, region: str, signals: list[Signal]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.region = region
        self.signals = signals
        self.published = 0
        self.received: set[str] = set()

    async def subscribe(self) -> None:
        async def on_command(msg: Msg) -> None:
            self.received.add(decode_command(msg.data).command_id)

        await self.nc.subscribe(f"sg.{self.region}.enforce.>", cb=on_command)

    async def publish_all(self, rate_per_s: float, stop: anyio.Event | None = None) -> None:
        """Every signal at ``rate_per_s``, or those up to ``stop``; then ``signals`` is what was
        published."""
        interval = 1.0 / rate_per_s
        start = time.monotonic()
        for i, s in enumerate(self.signals):
            if stop is not None and stop.is_set():
                self.signals = self.signals[:i]
                return
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            while True:
                try:
                    subject = inputs_subject(self.region, P, s.account_id)
                    data = encode_signal(s)
                    await self.js.publish(subject, data, timeout=2, headers=producer_headers(
                        self.region, subject, data, s.signal_id))
                    break
                except (nats.errors.Error, APIError, TimeoutError):
                    await anyio.sleep(0.2)  # the server is down: the same id dedups the retry
            self.published += 1

    async def recovered(self, store: PostgresEventStore, since: float, timeout_s: float
                        ) -> float:
        """Seconds from ``since`` until a signal published after it is committed (the store's
        inbox holds it): how long the nodes took to write new input again."""
        first = self.published + 1  # the next to go out, so published after ``since``
        assert first < len(self.signals), "the load ended before the recovery could be timed"
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    if self.published > first and await store.inbox_contains(
                            self.signals[first].signal_id):
                        return round(time.monotonic() - since, 2)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        SafeguardsError):
                    await anyio.sleep(0.2)  # this reader is still finding the restarted server
                    continue
                await anyio.sleep(0.05)

    async def wait_accounted(self, store: PostgresEventStore, timeout_s: float,
                             with_received: bool) -> CheckReport:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                report = await check_end_to_end(store, self.js, self.region, self.signals,
                                                self.received if with_received else None)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(1.0)
                continue
            if report.ok or time.monotonic() > deadline:
                return report
            await anyio.sleep(1.0)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield client
    await client.drain()


async def spread(leases: LeaseBucket, live: list[NodeProcess], timeout_s: float) -> None:
    """Until every partition's lease is held by the live node rendezvous hashing gives it (a
    node that joined has been handed its partitions)."""
    ids = [n.node_id for n in live]
    want = {f"part.{p}": owner_of(p, ids) for p in range(P)}
    with anyio.fail_after(timeout_s):
        while True:
            if await leases.holders("part.") == want:
                return
            await anyio.sleep(0.1)


def report_line(name: str, report: CheckReport, faults: int, **extra: object) -> None:
    summary = {"test": name, "faults_injected": faults, **report.summary(), **extra}
    print("FAULTS " + json.dumps(summary), flush=True)


async def test_kill9_nodes_mid_batch_repeatedly(nc: Client, nats_url: str,
                                                postgres_server: PostgresServer,
                                                log_dir: Path) -> None:
    """Five times, one of two nodes is SIGKILLed under a steady 150 signals/s and a fresh process
    replaces it: every kill lands under load (the load stops only once the last replacement has
    been handed its partitions), the dead node's partitions are taken over within 10 s, and
    every signal published counts exactly once with every change emitted."""
    region = "t" + uuid.uuid4().hex[:8]
    db = await create_database(postgres_server.admin_url, postgres_server.database_url("x"))
    await migrate(db)
    # more than the run needs (100 s at 150/s): the load ends when the faults are over
    signals = make_signals(region, 15000, accounts=150, seed=1)
    h = Harness(nc, region, signals)
    await h.subscribe()
    # Acks held 50 ms after each commit: most kills land between a commit and its acks.
    nodes = [NodeProcess(region=region, nats_url=nats_url, database_url=db, node_id=f"n{i}",
                         log_dir=log_dir, partitions=P, stats_interval_s=0.5, ack_delay_s=0.05)
             for i in range(2)]
    for n in nodes:
        await n.wait_ready()
    leases = await LeaseBucket.open(h.js, region, ttl_s=NodeSettings().lease_ttl_s)
    kills = 0
    takeovers: list[float] = []
    everyone = list(nodes)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.publish_all, 150.0, stop)
        for round_ in range(5):
            await spread(leases, nodes, 60)  # both nodes run partitions
            await anyio.sleep(1.0)  # and have been committing the load for a while
            victim = nodes[round_ % 2]
            victim.kill9()
            kills += 1
            t_kill = time.monotonic()
            # the replacement starts at once, so its start-up overlaps the dead node's leases
            # running out; the takeover is timed from the kill either way
            nodes[round_ % 2] = NodeProcess(region=region, nats_url=nats_url, database_url=db,
                                            node_id=f"n{round_ % 2}-r{round_}", log_dir=log_dir,
                                            partitions=P, stats_interval_s=0.5, ack_delay_s=0.05)
            everyone.append(nodes[round_ % 2])
            with anyio.fail_after(15):  # the dead node's partitions are all taken over
                while True:
                    held = await leases.holders("part.")
                    if len(held) == P and victim.node_id not in held.values():
                        break
                    await anyio.sleep(0.1)
            takeovers.append(round(time.monotonic() - t_kill, 2))
            await nodes[round_ % 2].wait_ready()
        await spread(leases, nodes, 60)  # the last replacement was handed its partitions
        await anyio.sleep(1.0)
        stop.set()
    assert len(h.signals) < len(signals), "the load ran out before the last kill"
    async with PostgresEventStore(region, db) as store:
        report = await h.wait_accounted(store, 90, with_received=True)
    for n in nodes:
        await n.stop_cleanly()
    counters = [n.last_stats() for n in everyone]
    # Signals a killed node committed but never acked come back and are found in the inbox.
    report_line("kill9_nodes", report, kills, takeover_s=takeovers,
                committed_then_redelivered=sum(c.get("duplicates", 0) for c in counters),
                processes=len(everyone))
    assert report.ok, report.summary()
    assert report.accounted == len(h.signals) > 1000
    assert report.enforcement_changes > 0
    assert max(takeovers) <= 10.0, takeovers


async def test_nats_server_restart_under_load(postgres_server: PostgresServer,
                                              log_dir: Path) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    db = await create_database(postgres_server.admin_url, postgres_server.database_url("x"))
    await migrate(db)
    server = EmbeddedNats(log_dir / "nats")
    server.start()
    try:
        client = await nats.connect(server.url, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.2)
        signals = make_signals(region, 1500, accounts=100, seed=2)
        h = Harness(client, region, signals)
        nodes = [NodeProcess(region=region, nats_url=server.url, database_url=db,
                             node_id=f"n{i}", log_dir=log_dir, partitions=P,
                             stats_interval_s=0.5) for i in range(2)]
        for n in nodes:
            await n.wait_ready()
        restarts = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.publish_all, 150.0)
            for _ in range(2):
                await anyio.sleep(3.0)
                server.kill()  # SIGKILL: no goodbye to clients
                restarts += 1
                await anyio.sleep(2.0)
                server.start()
        async with PostgresEventStore(region, db) as store:
            report = await h.wait_accounted(store, 120, with_received=False)
        counters = [await n.stop_cleanly() for n in nodes]
        await client.close()
        report_line("nats_restart", report, restarts,
                    bus_failures=sum(c["bus_failures"] for c in counters),
                    commands_repaired=sum(c["commands_repaired"] for c in counters))
        assert report.ok, report.summary()
        assert report.accounted == len(signals)
    finally:
        server.close()


async def test_postgres_restart_under_load(nc: Client, nats_url: str, log_dir: Path) -> None:
    """PostgreSQL crashes (SIGKILL) and then shuts down (fast) under two nodes while signals
    flow: nothing lost, nothing applied twice, and each time the nodes commit new input again
    within ``RECOVERY_BOUND_S`` of the server accepting connections."""
    region = "t" + uuid.uuid4().hex[:8]
    pg = EmbeddedPostgres(log_dir / "pg")
    pg.start()
    try:
        db = pg.create_database("faults")
        await migrate(db)
        # more than the run needs (100 s at 150/s): the load ends after the second recovery
        signals = make_signals(region, 15000, accounts=100, seed=3)
        h = Harness(nc, region, signals)
        await h.subscribe()
        nodes = [NodeProcess(region=region, nats_url=nats_url, database_url=db,
                             node_id=f"n{i}", log_dir=log_dir, partitions=P,
                             stats_interval_s=0.5) for i in range(2)]
        for n in nodes:
            await n.wait_ready()
        restarts = 0
        recovery_s: list[float] = []
        stop = anyio.Event()
        async with PostgresEventStore(region, db) as store, anyio.create_task_group() as tg:
            tg.start_soon(h.publish_all, 150.0, stop)
            for how in ("kill", "stop"):
                await anyio.sleep(3.0)
                # in a thread: the publisher goes on while the server goes and comes back
                await anyio.to_thread.run_sync(pg.kill if how == "kill" else pg.stop)
                restarts += 1
                await anyio.sleep(2.0)
                await anyio.to_thread.run_sync(pg.start)
                recovery_s.append(await h.recovered(store, time.monotonic(), 60.0))
            stop.set()
        assert len(h.signals) < len(signals), "the load ran out before the second recovery"
        async with PostgresEventStore(region, db) as store:
            report = await h.wait_accounted(store, 120, with_received=True)
        counters = [await n.stop_cleanly() for n in nodes]
        failures = sum(c["store_failures"] for c in counters)
        said = sum(store_failure_lines(n.err) for n in nodes)
        report_line("postgres_restart", report, restarts, recovery_s=recovery_s,
                    store_failures=failures, store_failure_lines=said)
        assert report.ok, report.summary()
        assert report.accounted == len(h.signals) > 1000
        assert max(recovery_s) <= RECOVERY_BOUND_S, recovery_s
        # Tried often while it was down, yet each loader, group commit and policy publisher
        # logs an outage's start (and a line per 10 s of it), not each try
        assert said <= restarts * (P + 2 * len(nodes)) * 2, (said, failures)
        assert failures > 2 * said, (said, failures)
    finally:
        pg.close()


async def test_two_nodes_that_both_own_every_partition(nc: Client, nats_url: str,
                                                       postgres_server: PostgresServer) -> None:
    """No leases: both nodes run every partition (a split brain). PostgreSQL's expected version
    and the inbox must still make every signal count exactly once."""
    region = "t" + uuid.uuid4().hex[:8]
    db = await create_database(postgres_server.admin_url, postgres_server.database_url("x"))
    await migrate(db)
    signals = make_signals(region, 2000, accounts=12, seed=4)  # few accounts: many races
    h = Harness(nc, region, signals)
    await h.subscribe()
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2)
    async with PostgresEventStore(region, db) as s1, PostgresEventStore(region, db) as s2:
        a = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=s1, node_id="a",
                 settings=settings, static_partitions=range(P))
        b = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=s2, node_id="b",
                 settings=settings, static_partitions=range(P))
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            await tg.start(b.run)
            # Every signal twice, the copies under different ids so both nodes may get one; in
            # order, with up to WINDOW copies awaiting their acks.
            acks: deque[asyncio.Future[PubAck]] = deque()
            with anyio.fail_after(120):
                for s in signals:
                    for _ in range(2):
                        if len(acks) == WINDOW:
                            await acks.popleft()
                        acks.append(await h.js.publish_async(
                            inputs_subject(region, P, s.account_id), encode_signal(s),
                            headers={"Nats-Msg-Id": uuid.uuid4().hex}))
                for ack in acks:
                    await ack
            report = await h.wait_accounted(s1, 90, with_received=True)
            a.request_stop()
            b.request_stop()
    # Faults: the split brain itself, plus one duplicated delivery per signal.
    report_line("dual_owner", report, 1, duplicated_deliveries=len(signals),
                conflicts=a.metrics.conflicts + b.metrics.conflicts,
                duplicates=a.metrics.duplicates + b.metrics.duplicates,
                committed_by_a=a.metrics.committed, committed_by_b=b.metrics.committed)
    assert report.ok, report.summary()
    assert a.metrics.committed + b.metrics.committed == len(signals)
    assert a.metrics.committed > 0 and b.metrics.committed > 0
