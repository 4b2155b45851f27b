"""Partition ownership across nodes: spread while alive, taken over when a node dies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import nats
import pytest
from checker import check_end_to_end, score_signal
from nats.aio.client import Client
from nats.aio.msg import Msg

from safeguards.actors.node import Node
from safeguards.actors.ownership import owner_of
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.leases import (
    LeaseBucket,
    lease_bucket_name,
    open_bucket,
    presence_subject,
)
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.subjects import inputs_subject

from bus_support import wait_until

P = 6
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_rendezvous_spreads_and_moves_little() -> None:
    nodes = ["a", "b", "c"]
    owners = [owner_of(p, nodes) for p in range(64)]
    assert all(owners.count(n) >= 10 for n in nodes)
    # Removing a node moves only its own partitions.
    after = [owner_of(p, ["a", "b"]) for p in range(64)]
    assert all(before == now for before, now in zip(owners, after, strict=True) if before != "c")


async def test_lease_is_revision_checked(nc: Client) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    leases = await LeaseBucket.open(nc.jetstream(), region, ttl_s=30)
    first = await leases.acquire("part.0", "n1")
    assert first is not None
    assert await leases.acquire("part.0", "n2") is None  # held: a create cannot take it
    renewed = await leases.renew(first)
    assert renewed is not None and renewed.revision > first.revision
    assert await leases.renew(first) is None  # a stale revision can never renew
    await leases.release(renewed)
    assert await leases.acquire("part.0", "n2") is not None


async def test_nodes_are_listed_by_the_stream_leader_with_no_consumer(
        nc: Client, nats_url: str) -> None:
    """The listing goes where a renewal goes (the bucket's stream leader: its info, then reads
    by key), never through a consumer, whose create needs a JetStream meta leader that a
    server's return after a network partition can leave missing for seconds."""
    region = "t" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    leases = await LeaseBucket.open(js, region, ttl_s=30)
    for key, holder in (("node.a", "a"), ("node.b", "b"), ("node.c", "c"), ("schema.a", "{}"),
                        ("part.0", "a"), ("part.1", "b")):
        assert await leases.acquire(key, holder) is not None
    gone = await leases.acquire("node.d", "d")
    assert gone is not None
    await leases.release(gone)  # a delete marker stays in the stream: not a live key
    spy = await nats.connect(nats_url)
    asked: list[str] = []

    async def seen(msg: Msg) -> None:
        asked.append(msg.subject)

    try:
        await spy.subscribe("$JS.API.>", cb=seen)
        await spy.flush()
        listed = await leases.holders(("node.", "schema."))
        await nc.flush()
        await spy.flush()
    finally:
        await spy.close()
    assert listed == {"node.a": "a", "node.b": "b", "node.c": "c", "schema.a": "{}"}
    assert await leases.holders("part.") == {"part.0": "a", "part.1": "b"}
    bucket = lease_bucket_name(region)
    assert asked and all(s in (f"$JS.API.STREAM.INFO.KV_{bucket}",
                               f"$JS.API.STREAM.MSG.GET.KV_{bucket}") for s in asked), asked
    await js.delete_key_value(bucket)


async def test_a_holder_that_stalls_is_not_gone_and_one_disconnected_is(
        nc: Client, nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    leases = await LeaseBucket.open(nc.jetstream(), region, ttl_s=30, nc=nc)
    other = await nats.connect(nats_url)
    try:
        theirs = await LeaseBucket.open(other.jetstream(), region, ttl_s=30, nc=other)
        await theirs.announce("b")
        # (one ask may find nobody a moment after a subscription: ``ownership`` acts only on
        # a peer that every ask over a renewal found gone)
        await _until(leases, "b", gone=False)
        # a stalled process (or one behind a paused server) still holds the interest
        stalled = await other.subscribe(presence_subject(region, "c"), cb=_never_answer)
        await _until(leases, "c", gone=False)
        await stalled.unsubscribe()
    finally:
        await other.close()
    await _until(leases, "b", gone=True)  # once the server has seen the connection close
    assert await leases.gone("c")
    await nc.jetstream().delete_key_value(lease_bucket_name(region))


async def _until(leases: LeaseBucket, holder: str, *, gone: bool) -> None:
    with anyio.fail_after(5):
        while True:
            if await leases.gone(holder) == gone:
                return
            await anyio.sleep(0.05)


async def _never_answer(msg: Msg) -> None:
    return None


async def test_a_changed_lease_ttl_reaches_an_existing_bucket(nc: Client) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    bucket = lease_bucket_name(region)
    try:
        first = await LeaseBucket.open(js, region, ttl_s=30)
        held = await first.acquire("part.0", "n1")
        assert held is not None
        # nodes restarted with lease_ttl_s = 1: the bucket takes it, the lease held is kept
        leases = await LeaseBucket.open(js, region, ttl_s=1.0)
        config = (await js.stream_info(f"KV_{bucket}")).config
        assert config.max_age == 1.0 and config.duplicate_window == 1.0
        assert await leases.acquire("part.0", "n2") is None  # still n1's
        # a role that may not provision opens it as it is
        await open_bucket(js, bucket, provision=False, history=1, ttl=60.0)
        assert (await js.stream_info(f"KV_{bucket}")).config.max_age == 1.0
        # n1 stopped renewing: its lease is free after the new TTL, not the old 30 s
        with anyio.fail_after(10):
            while True:
                if await leases.acquire("part.0", "n2") is not None:
                    break
                await anyio.sleep(0.2)
    finally:
        await js.delete_key_value(bucket)


@pytest.mark.slow  # a fault test: a node dies, its leases run out
async def test_partitions_spread_and_move_when_a_node_dies(nc: Client, nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    store = InMemoryEventStore(region)
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2, lease_ttl_s=2.0,
                            lease_renew_s=0.5)
    a = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store, node_id="a",
             settings=settings)
    b = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store, node_id="b",
             settings=settings)
    signals = [score_signal(region, f"acct-{i}", f"s-{i}", T0, (("hate", 0.65),))
               for i in range(60)]

    async with anyio.create_task_group() as tg:
        b_scope = await _a_then_b_balanced(tg, a, b)
        for s in signals[:30]:
            await js.publish(inputs_subject(region, P, s.account_id), encode_signal(s),
                             headers={"Nats-Msg-Id": s.signal_id}, timeout=5)
        # b dies without a word: no drain, no lease release.
        b_scope.cancel()
        for s in signals[30:]:
            await js.publish(inputs_subject(region, P, s.account_id), encode_signal(s),
                             headers={"Nats-Msg-Id": s.signal_id}, timeout=5)
        took = await wait_until(lambda: len(a.owned) == P, 10)
        assert took <= settings.lease_ttl_s + 3 * settings.lease_renew_s + 1.0
        await wait_until(lambda: a.metrics.committed + b.metrics.committed
                         + a.metrics.duplicates >= len(signals), 30)
        a.request_stop()
    report = await check_end_to_end(store, js, region, signals)
    assert report.ok, report.summary()


async def _a_then_b_balanced(tg: anyio.abc.TaskGroup, a: Node, b: Node) -> anyio.CancelScope:
    """a takes every partition, then b joins (in a scope the test can cancel to kill it) and
    they rebalance: each runs the partitions rendezvous hashing gives it, none twice."""
    await tg.start(a.run)
    await wait_until(lambda: len(a.owned) == P, 10)
    b_scope = anyio.CancelScope()

    async def run_b(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with b_scope:
            await b.run(task_status=task_status)

    await tg.start(run_b)
    await wait_until(lambda: set(a.owned) | set(b.owned) == set(range(P))
                     and not set(a.owned) & set(b.owned) and bool(b.owned), 15)
    return b_scope


@pytest.mark.slow  # a fault test: a node dies; its leases would last 30 s
async def test_a_dead_nodes_partitions_are_taken_long_before_its_leases_lapse(
        nats_url: str) -> None:
    """b's process dies (its connection closes, nothing released): a evicts it within about a
    renewal of noticing, where its leases would have held its partitions for a TTL."""
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2, lease_ttl_s=30.0,
                            lease_renew_s=0.5)
    a, b = (Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                 node_id=n, settings=settings) for n in ("a", "b"))
    async with anyio.create_task_group() as tg:
        b_scope = await _a_then_b_balanced(tg, a, b)
        await wait_until(lambda: a.ownership is not None and "b" in a.ownership._seen, 5)
        b_scope.cancel()  # no drain, no release: its connection just closes
        await wait_until(lambda: len(a.owned) == P, 10)  # its leases had 30 s to run
        a.request_stop()
