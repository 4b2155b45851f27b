"""Nodes whose wall clocks step an hour, one forwards and one back, while signals flow: ownership
stays where it was (leases run on the monotonic clock and the bucket's TTL), nothing is applied
twice or lost, and event time (strike decay, escalation windows, expiries) does not leap."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import anyio
from checker import check_end_to_end, score_signal
from nats.aio.client import Client

from safeguards.actors.clock import SystemClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.events import Signal
from safeguards.core.subjects import inputs_subject

from bus_support import wait_until

P = 6
HOUR = 3600.0


class SteppedWall:
    """The host's wall clock, plus a step the test sets."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_wall_clock_steps_on_nodes_move_no_partition_and_apply_nothing_twice(
        nc: Client, nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    store = InMemoryEventStore(region)
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2, lease_ttl_s=2.0,
                            lease_renew_s=0.5)
    walls = {"a": SteppedWall(), "b": SteppedWall()}
    clocks = {n: SystemClock(wall=w) for n, w in walls.items()}
    nodes = {n: Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                     node_id=n, settings=settings, clock=clocks[n]) for n in walls}
    a, b = nodes["a"], nodes["b"]
    signals = [score_signal(region, f"acct-{i % 12}", f"s-{i}", datetime.now(UTC),
                            (("hate", 0.65),)) for i in range(60)]
    began = datetime.now(UTC)
    moves: list[tuple[list[int], list[int]]] = []

    async def publish(batch: list[Signal]) -> None:
        for s in batch:
            await js.publish(inputs_subject(region, P, s.account_id), encode_signal(s),
                             headers={"Nats-Msg-Id": s.signal_id}, timeout=5)

    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        await wait_until(lambda: set(a.owned) | set(b.owned) == set(range(P))
                         and not set(a.owned) & set(b.owned) and bool(a.owned)
                         and bool(b.owned), 15)
        held = (a.owned, b.owned)
        await publish(signals[:30])
        walls["a"].offset, walls["b"].offset = HOUR, -HOUR  # NTP steps both, opposite ways
        await publish(signals[30:])
        # Watch ownership for twice the lease TTL after the steps: nothing may move.
        for _ in range(int(2 * settings.lease_ttl_s / 0.1)):
            if (a.owned, b.owned) != held:
                moves.append((a.owned, b.owned))
            await anyio.sleep(0.1)
        await wait_until(lambda: a.metrics.committed + b.metrics.committed
                         + a.metrics.duplicates + b.metrics.duplicates >= len(signals), 30)
        a.request_stop()
        b.request_stop()
    ended = datetime.now(UTC)
    assert moves == []
    report = await check_end_to_end(store, js, region, signals)
    assert report.ok, report.summary()
    # Event time kept to the time that passed: within seconds of the real clock, not an hour off.
    slack = timedelta(seconds=5)
    stamps = [e.occurred_at for account in {s.account_id for s in signals}
              for e in await store.history(account)]
    assert stamps and all(began - slack <= at <= ended + slack for at in stamps)
    assert 0 < abs(clocks["a"].unabsorbed_s()) < HOUR  # the step is being taken in, not ignored
