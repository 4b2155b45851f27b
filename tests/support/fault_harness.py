"""Load, probes and the end-to-end check for fault runs on a region's JetStream cluster.

Shared by ``benchmarks/cluster_faults.py`` and the cluster fault tests. Actor nodes run as real
processes (``python -m safeguards.regions.node_cli node``) so they can be SIGKILLed; the load
publishes signals at a steady rate, retrying each until JetStream confirms it (the same message
id deduplicates a retry); a real gate (``csp.feed`` into a ``csp.gate.Gate``) follows the
enforcement stream; ``probe`` measures how long after a fault new input is committed again;
``check`` compares inputs with the store (``checker``) and the gate's view with each account's
newest committed enforcement.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import nats.errors
from checker import CheckReport, check_end_to_end, score_signal
from nats.aio.client import Client
from nats.js.errors import APIError

from safeguards.adapters.bus.cluster_watch import quorum_write, watch_jetstream
from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.leases import lease_bucket_name
from safeguards.adapters.bus.signing import load_signer
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.feed import EnforcementFeed
from safeguards.adapters.csp.gate import Gate
from safeguards.core.codec import encode_signal
from safeguards.core.errors import SafeguardsError
from safeguards.core.events import EnforcementChanged, Signal
from safeguards.core.policy import default_policy
from safeguards.core.ports import EventStore
from safeguards.core.subjects import inputs_subject

from bus_support import producer_headers

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def make_signals(region: str, n: int, accounts: int, seed: int, prefix: str = "sig"
                 ) -> list[Signal]:
    """Benign scores, points that accumulate, and a few severe scores that jump a level."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        roll = rnd.random()
        if roll < 0.03:
            scores: tuple[tuple[str, float], ...] = (("weapons", 0.95),)
        elif roll < 0.25:
            scores = (("jailbreak", 0.8),)
        else:
            scores = (("jailbreak", 0.1), ("cyber", 0.2))
        out.append(score_signal(region, f"acct-{rnd.randrange(accounts)}",
                                f"{region}-{prefix}-{i}", T0, scores))
    return out


def partition_of(region: str, partitions: int, account: str) -> int:
    return int(inputs_subject(region, partitions, account).split(".")[3])


def store_failure_lines(err: Path) -> int:
    """A node's log's lines saying that a store call failed (group commits, partitions' loads,
    the policy publisher): one per outage and loop, not one per try."""
    loops = (" safeguards.actors.commit: ", " safeguards.actors.partition: ",
             " safeguards.adapters.bus.policy_board: ")
    return sum(1 for line in err.read_text().splitlines()
               if " failed " in line and any(loop in line for loop in loops))


@dataclass(slots=True)
class RegionLoad:
    """Publishes a region's signals through one connection to the cluster."""

    nc: Client
    region: str
    partitions: int
    signals: list[Signal] = field(default_factory=list)  # every signal published, probes too
    publish_retries: int = 0
    probes: int = 0
    # partition: seconds until JetStream accepted its probe, and until it was committed
    last_probe: dict[int, tuple[float, float]] = field(default_factory=dict)

    async def publish(self, s: Signal) -> None:
        js = self.nc.jetstream(timeout=1.0)
        subject, data = inputs_subject(self.region, self.partitions, s.account_id), \
            encode_signal(s)
        headers = producer_headers(self.region, subject, data, s.signal_id)
        self.signals.append(s)
        while True:
            try:
                with anyio.fail_after(2.0):
                    await js.publish(subject, data, timeout=1.0, headers=headers)
                return
            except (nats.errors.Error, APIError, TimeoutError):
                self.publish_retries += 1  # no leader yet / server gone: the same id dedups
                await anyio.sleep(0.2)

    async def steady(self, signals: list[Signal], rate_per_s: float,
                     stop: anyio.Event) -> None:
        start = time.monotonic()
        for i, s in enumerate(signals):
            if stop.is_set():
                return
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            await self.publish(s)

    async def probe(self, store: EventStore, label: str, timeout_s: float = 120.0) -> float:
        """One new signal per partition, published now; seconds until every one is committed
        (JetStream accepted it and the partition's owner decided it); ``last_probe`` holds each
        partition's, and when its probe was accepted."""
        self.probes += 1
        start = time.monotonic()
        probes = []
        for p in range(self.partitions):
            k = 0
            while partition_of(self.region, self.partitions,
                               account := f"probe-{p}-{k}") != p:
                k += 1
            probes.append(score_signal(self.region, account,
                                       f"{self.region}-probe-{label}-{self.probes}-{p}", T0,
                                       (("jailbreak", 0.1),)))
        self.last_probe = {}

        async def committed(p: int, s: Signal) -> None:
            await self.publish(s)
            published = round(time.monotonic() - start, 2)
            while True:
                if await _committed(store, s.signal_id):
                    break
                await anyio.sleep(0.1)
            self.last_probe[p] = (published, round(time.monotonic() - start, 2))

        with anyio.fail_after(timeout_s):
            async with anyio.create_task_group() as tg:
                for p, s in enumerate(probes):
                    tg.start_soon(committed, p, s)
        return round(time.monotonic() - start, 2)


async def _committed(store: EventStore, key: str) -> bool:
    try:
        with anyio.fail_after(5):
            return await store.inbox_contains(key)
    except (TimeoutError, OSError, SafeguardsError, asyncpg.PostgresError,
            asyncpg.InterfaceError):
        return False  # the store is restarting: ask again


@asynccontextmanager
async def following_gate(nats_url: str, region: str) -> AsyncIterator[Gate]:
    """A real gate's enforcement cache, fed from the region's enforcement stream as the
    inline adapters' is (signed commands only)."""
    gate = Gate(default_policy())
    link = BusLink(nats_url, name=f"fault-gate-{region}")
    feed = EnforcementFeed(link, region, gate, load_signer(region).verifier(), heartbeat_s=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        await tg.start(feed.run)
        yield gate
        tg.cancel_scope.cancel()


@asynccontextmanager
async def region_load(nats_url: str, region: str, partitions: int
                      ) -> AsyncIterator[RegionLoad]:
    """The load's connection, moved off a server that is cut from the cluster as the nodes'
    are (``cluster_watch``)."""
    nc = await connect(nats_url, name=f"fault-load-{region}")
    try:
        async with anyio.create_task_group() as tg:
            probe = quorum_write(nc, lease_bucket_name(region), "fault-load")
            tg.start_soon(functools.partial(watch_jetstream, nc, name="fault-load",
                                            probe=probe))
            yield RegionLoad(nc, region, partitions)
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


@dataclass(slots=True)
class FaultCheck:
    report: CheckReport
    gate_stale: list[str]  # accounts whose gate holds an older version than the store's newest

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.gate_stale


async def check(store: EventStore, load: RegionLoad, gate: Gate,
                timeout_s: float = 120.0) -> FaultCheck:
    """Until inputs, store, enforcement stream and the gate agree, or the deadline."""
    js = load.nc.jetstream(timeout=5.0)
    deadline = time.monotonic() + timeout_s
    while True:
        result: FaultCheck | None = None
        try:
            report = await check_end_to_end(store, js, load.region, load.signals)
            stale = []
            for account in {s.account_id for s in load.signals}:
                newest = 0
                for e in await store.history(account):
                    if isinstance(e.body, EnforcementChanged):
                        newest = e.version
                if newest and (gate.held_version(account) or 0) < newest:
                    stale.append(account)
            result = FaultCheck(report, stale)
        except Exception:
            if time.monotonic() > deadline:
                raise
        if result is not None and (result.ok or time.monotonic() > deadline):
            return result
        await anyio.sleep(1.0)
