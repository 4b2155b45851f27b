"""The bus port's contract (``core.bus``), run against NATS JetStream and the in-memory twin.

Each test gets a fresh region on one of the two with a short ack wait (1 s) and three
deliveries at most, publishes inputs the way producers do, and checks what the actors rely on:
settling (ack, nak, term, in-progress), redelivery after the ack wait, the delivery limit,
dead letters kept once per delivery, leases, the enforcement stream's newest command,
deduplication and publish-if-last, and forwarded signals deduplicated onto the inputs."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import nats
import pytest

from safeguards.adapters.bus.consumers import ConsumerSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus, MemoryPolicyBoard
from safeguards.adapters.bus.policy_board import Board, PolicyBoard, PublishedPolicy
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.bus import InboundMessage, RegionBus
from safeguards.core.events import PolicyChanged
from safeguards.core.ids import policy_entity
from safeguards.core.policy import default_policy, default_policy_text
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.subjects import dead_letter_subject, enforce_subject, inputs_subject

from bus_support import wait_until
from store_events import make_event

ACK_WAIT_S = 1.0
MAX_DELIVER = 3


@dataclass
class Harness:
    bus: RegionBus
    region: str
    publish: Callable[[str, bytes], Awaitable[None]]
    dead_letters: Callable[[], Awaitable[list[tuple[str, bytes]]]]  # (reason, data)


@contextlib.asynccontextmanager
async def nats_harness(url: str) -> AsyncIterator[Harness]:
    region = "b" + uuid.uuid4().hex[:8]
    consumers = ConsumerSettings(backoff=(ACK_WAIT_S,) * MAX_DELIVER, max_deliver=MAX_DELIVER)
    nc = await nats.connect(url)
    try:
        async with NatsBus(url, region, consumers=consumers).connect("contract") as bus:
            await bus.provision()
            js = nc.jetstream()

            async def publish(subject: str, data: bytes) -> None:
                await js.publish(subject, data, timeout=5)

            async def dead_letters() -> list[tuple[str, bytes]]:
                sub = await js.subscribe(dead_letter_subject(region, ">"), ordered_consumer=True)
                out = []
                with anyio.move_on_after(1.0):
                    async for msg in sub.messages:
                        out.append((msg.headers["Sg-Dlq-Reason"] if msg.headers else "",
                                    msg.data))
                await sub.unsubscribe()
                return out

            yield Harness(bus, region, publish, dead_letters)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def memory_harness() -> AsyncIterator[Harness]:
    region = "b" + uuid.uuid4().hex[:8]
    broker = MemoryBroker(region, backoff=(ACK_WAIT_S,) * MAX_DELIVER, max_deliver=MAX_DELIVER)
    async with MemoryBus(broker).connect("contract") as bus:

        async def publish(subject: str, data: bytes) -> None:
            broker.publish_input(subject, data)

        async def dead_letters() -> list[tuple[str, bytes]]:
            return [(d.reason, d.data) for d in broker.dead_letters]

        yield Harness(bus, region, publish, dead_letters)


@pytest.fixture(params=["memory", "nats"])
def harness(request: pytest.FixtureRequest) -> Callable[[], contextlib.AbstractAsyncContextManager[
        Harness]]:
    if request.param == "memory":
        return memory_harness
    url = request.getfixturevalue("nats_url")
    return lambda: nats_harness(url)


HarnessFactory = Callable[[], contextlib.AbstractAsyncContextManager[Harness]]


async def take(h: Harness, partition: int, n: int, timeout_s: float = 5.0
               ) -> list[InboundMessage]:
    """Fetch until ``n`` messages came (or the time is up)."""
    source = h.bus.signal_source(partition)
    await source.open()
    got: list[InboundMessage] = []
    try:
        with anyio.move_on_after(timeout_s):
            while len(got) < n:
                got += await source.fetch(n - len(got), 0.5)
    finally:
        await source.close()
    return got


def subject(h: Harness, account: str) -> str:
    return inputs_subject(h.region, 1, account)


async def test_settling_ack_nak_term(harness: HarnessFactory) -> None:
    async with harness() as h:
        for account in ("acked", "naked", "termed"):
            await h.publish(subject(h, account), account.encode())
        first = await take(h, 0, 3)
        assert sorted(m.data for m in first) == [b"acked", b"naked", b"termed"]
        assert all(m.deliveries == 1 for m in first)
        by = {m.data: m for m in first}
        await by[b"acked"].ack()
        await by[b"termed"].term()
        await by[b"naked"].nak(0)
        [again] = await take(h, 0, 1)
        assert (again.data, again.deliveries, again.sequence) == (
            b"naked", 2, by[b"naked"].sequence)
        await again.ack()
        assert await take(h, 0, 1, timeout_s=ACK_WAIT_S * 2.5) == []


async def test_unsettled_input_comes_back_after_the_ack_wait_until_the_limit(
        harness: HarnessFactory) -> None:
    async with harness() as h:
        await h.publish(subject(h, "slow"), b"x")
        deliveries = []
        for _ in range(MAX_DELIVER):
            [m] = await take(h, 0, 1, timeout_s=ACK_WAIT_S * 4)
            deliveries.append(m.deliveries)
        assert deliveries == [1, 2, 3]
        # delivered MAX_DELIVER times: never again (the actors dead-letter it on its last one)
        assert await take(h, 0, 1, timeout_s=ACK_WAIT_S * 2.5) == []


async def test_in_progress_keeps_an_input_from_coming_back(harness: HarnessFactory) -> None:
    async with harness() as h:
        await h.publish(subject(h, "busy"), b"x")
        source = h.bus.signal_source(0)
        await source.open()
        [m] = await source.fetch(1, 5.0)
        for _ in range(4):  # held 1.6 ack waits in all, kept alive every 0.4
            await anyio.sleep(ACK_WAIT_S * 0.4)
            await m.in_progress()
        assert list(await source.fetch(1, ACK_WAIT_S * 0.5)) == []
        await m.ack()
        await source.close()


async def test_interrupt_ends_a_waiting_fetch(harness: HarnessFactory) -> None:
    async with harness() as h:
        source = h.bus.signal_source(0)
        await source.open()
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 0)
                source.interrupt()
                assert list(await source.fetch(10, 30.0)) == []
        await source.close()


async def test_a_delivery_is_dead_lettered_once(harness: HarnessFactory) -> None:
    async with harness() as h:
        await h.publish(subject(h, "poison"), b"\x00bad")
        [m] = await take(h, 0, 1)
        await h.bus.dead_letters.send(m, "actors", "undecodable", ValueError("boom"))
        await h.bus.dead_letters.send(m, "actors", "undecodable", ValueError("boom"))
        await m.term()
        assert await h.dead_letters() == [("undecodable", b"\x00bad")]


async def test_leases(harness: HarnessFactory) -> None:
    async with harness() as h:
        leases = await h.bus.lease_table(ttl_s=1.5)
        a = await leases.acquire("part.0", "a")
        assert a is not None and await leases.acquire("part.0", "b") is None
        renewed = await leases.renew(a)
        assert renewed is not None and await leases.renew(a) is None  # an old revision
        assert await leases.holder("part.0") == "a"
        assert await leases.holders("part.") == {"part.0": "a"}
        assert await leases.holders(("node.", "part.")) == {"part.0": "a"}
        assert await leases.holders(("node.", "schema.")) == {}
        await leases.release(renewed)
        b = await leases.acquire("part.0", "b")
        assert b is not None
        await anyio.sleep(2.5)  # b never renews: the key frees itself
        assert await leases.holder("part.0") is None and await leases.renew(b) is None
        assert await leases.acquire("part.0", "c") is not None


async def test_lease_holders_announce_themselves_and_a_gone_one_is_evicted(
        harness: HarnessFactory) -> None:
    async with harness() as h:
        leases = await h.bus.lease_table(ttl_s=30)
        await leases.announce("node/a.1")  # any holder name: not a subject token
        assert not await leases.gone("node/a.1")
        assert await leases.gone("b")  # nobody answers for b: no process of it is on the bus
        for key, holder in (("node.b", "b"), ("part.0", "b"), ("part.1", "node/a.1"),
                            ("part.2", "b")):
            assert await leases.acquire(key, holder) is not None
        assert await leases.evict("b") == ["node.b", "part.0", "part.2"]
        assert await leases.holders("") == {"part.1": "node/a.1"}
        assert await leases.acquire("part.0", "node/a.1") is not None  # free at once
        assert await leases.evict("b") == []


async def test_commands_newest_per_subject_deduplicated_and_published_if_last(
        harness: HarnessFactory) -> None:
    async with harness() as h:
        commands = h.bus.commands
        subject_a = enforce_subject(h.region, "acct-a")
        assert await commands.last(subject_a) is None
        await commands.publish(OutboxMessage("c1", subject_a, b"v1"))
        await commands.publish(OutboxMessage("c1", subject_a, b"v1"))  # deduplicated
        first = await commands.last(subject_a)
        assert first is not None and first[1] == b"v1"
        await commands.publish(OutboxMessage("c2", subject_a, b"v2"))
        second = await commands.last(subject_a)
        assert second is not None and second[1] == b"v2" and second[0] > first[0]
        assert not await commands.publish_after(OutboxMessage("c3", subject_a, b"v3"), first[0])
        assert await commands.publish_after(OutboxMessage("c3", subject_a, b"v3"), second[0])
        third = await commands.last(subject_a)
        assert third is not None and third[1] == b"v3"


async def test_forwarded_signals_reach_their_partition_once(harness: HarnessFactory) -> None:
    async with harness() as h:
        forwarded = OutboxMessage("f1", subject(h, "prompt:" + "ab" * 16), b"score")
        await h.bus.signals.publish(forwarded)
        await h.bus.signals.publish(forwarded)  # a relay's re-publish: deduplicated
        [got] = await take(h, 0, 1)
        assert (got.subject, got.data) == (forwarded.subject, b"score")
        await got.ack()
        assert await take(h, 0, 1, timeout_s=ACK_WAIT_S / 2) == []  # no second copy


async def test_the_memory_bus_publishes_and_follows_the_stores_newest_policy() -> None:
    """The twin runs the same publisher and follower as NATS (``policy_board.run_policy``): the
    newest PolicyChanged committed in the store is applied; an invalid document is not."""
    region = "b" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    applied: list[str] = []
    text = default_policy_text().replace('version = "default-', 'version = "candidate-', 1)
    events = [make_event(policy_entity(region), region, v, body=PolicyChanged(
        f"v{v}", hashlib.sha256(doc.encode()).hexdigest(), doc, "op", "test", v))
        for v, doc in ((1, text), (2, "not toml ["))]
    await store.append(AppendRequest(policy_entity(region), 0, (events[0],)))
    async with MemoryBus(MemoryBroker(region)).connect("policy") as bus, \
            anyio.create_task_group() as tg:
        tg.start_soon(bus.run_policy, store, lambda p: applied.append(p.version))
        await wait_until(lambda: len(applied) == 1, 5)
        await store.append(AppendRequest(policy_entity(region), 1, (events[1],)))
        await anyio.sleep(1.0)  # the follower is woken by the board's change
        tg.cancel_scope.cancel()
    assert applied == [default_policy().version.replace("default-", "candidate-", 1)]


@contextlib.asynccontextmanager
async def nats_board(url: str) -> AsyncIterator[Board]:
    nc = await nats.connect(url)
    try:
        yield await PolicyBoard.open(nc.jetstream(), "b" + uuid.uuid4().hex[:8])
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def memory_board() -> AsyncIterator[Board]:
    yield MemoryPolicyBoard(MemoryBroker("b" + uuid.uuid4().hex[:8]))


@pytest.fixture(params=["memory", "nats"])
def board(request: pytest.FixtureRequest) -> Callable[[], contextlib.AbstractAsyncContextManager[
        Board]]:
    if request.param == "memory":
        return memory_board
    url = request.getfixturevalue("nats_url")
    return lambda: nats_board(url)


def published(version: int) -> PublishedPolicy:
    text = default_policy_text()
    return PublishedPolicy(version, f"v{version}", hashlib.sha256(text.encode()).hexdigest(),
                           text)


async def test_a_follower_waiting_on_the_board_wakes_when_it_changes(
        board: Callable[[], contextlib.AbstractAsyncContextManager[Board]]) -> None:
    """Followers wait for the board's change notice instead of polling: a publish wakes a
    waiting follower at once; with no change, the wait ends at its timeout."""
    async with board() as b:
        await b.wait_change(0.2)  # a NATS watch first replays the key's state
        await b.wait_change(0.2)
        started = anyio.current_time()
        await b.wait_change(0.3)  # nothing changes: the timeout ends it
        assert anyio.current_time() - started >= 0.25
        woke: list[float] = []

        async def follower() -> None:
            await b.wait_change(10.0)
            woke.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            await anyio.sleep(0.2)
            published_at = anyio.current_time()
            assert await b.publish(published(1))
        assert woke and woke[0] - published_at < 2.0
        current, _ = await b.read()
        assert current == published(1)
