"""One node end to end on a real NATS: signals in, events and enforcement commands out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import anyio
import msgpack
import pytest
from checker import check_end_to_end, score_signal
from nats.aio.client import Client
from nats.aio.msg import Msg
from region_support import new_database

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.dlq import H_DELIVERIES, H_ERROR, H_REASON
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore, migrate
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    EnforcementChanged,
    RequestObserved,
    ScoreRecorded,
    Signal,
)
from safeguards.core.ids import partition_of, subject_token
from safeguards.core.ports import EventStore
from safeguards.core.subjects import inputs_subject, stream_name

from bus_support import publish_signals, wait_until

P = 4
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def region_name() -> str:
    return "t" + uuid.uuid4().hex[:8]


class PostgresServer(Protocol):
    admin_url: str

    def database_url(self, name: str) -> str: ...


async def create_database(server: PostgresServer) -> str:
    return await new_database(server, "sg_actors")


StoreFactory = Callable[[str], Awaitable[EventStore]]


@pytest.fixture(params=["memory", "postgres"])
async def make_store(request: pytest.FixtureRequest,
                     postgres_server: PostgresServer) -> AsyncIterator[StoreFactory]:
    """The in-memory store and the real PostgreSQL one: the node must not care which."""
    opened: list[PostgresEventStore] = []

    async def make(region: str) -> EventStore:
        if request.param == "memory":
            return InMemoryEventStore(region)
        url = await create_database(postgres_server)
        await migrate(url)
        store = PostgresEventStore(region, url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def fast_settings() -> NodeSettings:
    return NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2)


async def test_node_commits_each_signal_once_and_emits_enforcement(
    nc: Client, nats_url: str, make_store: StoreFactory
) -> None:
    region = region_name()
    js = nc.jetstream()
    store = await make_store(region)
    clock = ManualClock(T0)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=clock, settings=fast_settings(), static_partitions=range(P))
    received: set[str] = set()  # the fast path and the relay may both deliver a command

    async def on_command(msg: Msg) -> None:
        received.add(decode_command(msg.data).command_id)

    await nc.subscribe(f"sg.{region}.enforce.>", cb=on_command)
    signals = [
        score_signal(region, f"acct-{i % 10}", f"sig-{i}", T0, (("jailbreak", 0.1),))
        for i in range(40)
    ]
    # One severe weapons score: the policy jumps that account to L3 at once.
    signals.append(score_signal(region, "acct-3", "sig-weapons", T0, (("weapons", 0.97),)))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, P, signals)
        await wait_until(lambda: node.metrics.committed == len(signals))
        await wait_until(lambda: len(received) == 1)
        node.request_stop()
    report = await check_end_to_end(store, js, region, signals, received)
    assert report.ok, report.summary()
    assert report.accounted == len(signals)
    assert report.enforcement_changes == 1
    history = await store.history("acct-3")
    change = [e for e in history if isinstance(e.body, EnforcementChanged)]
    assert change[0].body.level == 3  # type: ignore[union-attr]
    assert change[0].occurred_at == T0  # decided at the node's (injected) clock


async def test_poison_messages_are_dead_lettered_and_others_flow(nc: Client, nats_url: str) -> None:
    region = region_name()
    js = nc.jetstream()
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=fast_settings(), static_partitions=range(P))
    good = [score_signal(region, "acct-good", f"good-{i}", T0, (("cyber", 0.2),))
            for i in range(5)]
    p = partition_of("acct-x", P)
    subject = f"sg.{region}.acct.{p}.{subject_token('acct-x')}"
    foreign = score_signal("zz", "acct-x", "foreign-1", T0, (("cyber", 0.2),))
    misrouted = score_signal(region, "acct-y", "misrouted-1", T0, (("cyber", 0.2),))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await js.publish(subject, b"\xc1 not msgpack", timeout=5)
        await js.publish(subject, msgpack.packb({"t": "Gossip", "sv": 1}), timeout=5)
        await js.publish(subject, encode_signal(foreign), timeout=5)
        await js.publish(subject, encode_signal(misrouted), timeout=5)  # acct-y on acct-x's subject
        await publish_signals(js, region, P, good)
        await wait_until(lambda: node.metrics.dead_lettered == 4
                         and node.metrics.committed == len(good))
        node.request_stop()
    dlq = await js.pull_subscribe(f"sg.{region}.dlq.>", durable=None,
                                  stream=stream_name(region, "DLQ"))
    msgs = await dlq.fetch(10, timeout=5)
    reasons = sorted(m.headers[H_REASON] for m in msgs if m.headers)
    assert reasons == ["region_mismatch", "subject_mismatch", "undecodable", "undecodable"]
    errors = {m.headers[H_ERROR] for m in msgs if m.headers and H_ERROR in m.headers}
    assert errors == {"MalformedEnvelope", "UnknownType"}
    assert all(m.headers and m.headers[H_DELIVERIES] == "1" for m in msgs)  # no retries for these
    info = await js.consumer_info(stream_name(region, "INPUTS"), f"actors-{region}-p{p}")
    assert info.num_ack_pending == 0 and info.num_pending == 0  # nothing left hanging
    assert (await check_end_to_end(store, js, region, good)).ok


async def test_duplicate_and_reordered_deliveries_apply_once(
    nc: Client, nats_url: str, make_store: StoreFactory
) -> None:
    region = region_name()
    js = nc.jetstream()
    store = await make_store(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=fast_settings(), static_partitions=range(P))
    signals = [score_signal(region, f"acct-{i % 3}", f"s-{i}", T0, (("violence", 0.7),))
               for i in range(30)]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        # Every signal twice, under distinct Nats-Msg-Ids so JetStream keeps both copies, and the
        # second round in reverse order.
        for s in [*signals, *reversed(signals)]:
            await js.publish(inputs_subject(region, P, s.account_id), encode_signal(s),
                             headers={"Nats-Msg-Id": uuid.uuid4().hex}, timeout=5)
        await wait_until(lambda: node.metrics.committed + node.metrics.duplicates == 60)
        node.request_stop()
    assert node.metrics.committed == 30 and node.metrics.duplicates == 30
    report = await check_end_to_end(store, js, region, signals)
    assert report.ok, report.summary()


async def test_the_fast_path_marks_what_it_published(nc: Client, nats_url: str) -> None:
    """A command published straight from the commit is marked published by the fast path, so
    no relay's poll sends it again (the poll here is too slow to be the one that marked it)."""
    region = region_name()
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=NodeSettings(relay_poll_s=60),
                static_partitions=range(P))
    received: list[str] = []

    async def on_command(msg: Msg) -> None:
        received.append(decode_command(msg.data).command_id)

    await nc.subscribe(f"sg.{region}.enforce.>", cb=on_command)
    signal = score_signal(region, "acct-w", "w-1", T0, (("weapons", 0.97),))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(nc.jetstream(), region, P, [signal])
        await wait_until(lambda: node.metrics.commands_published == 1)
        assert await store.pending_outbox(10) == []
        node.request_stop()
    assert len(received) == 1


async def test_a_flagged_prompt_is_forwarded_to_its_own_history_once_per_account(
    nc: Client, nats_url: str, make_store: StoreFactory
) -> None:
    """Three accounts send the same prompt (one link key) and the classifier flags it; a fourth
    sends another prompt, scored benign. Each flagged account is linked to the prompt and its
    score forwarded through the outbox (signed as a producer: the node checks every input), so
    the prompt's own history counts all three and refuses the prompt; the benign one has none.
    Once the prompt is enforced, each of its members hears of it (the linked level)."""
    region = region_name()
    js = nc.jetstream()
    store = await make_store(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=fast_settings(), static_partitions=range(P),
                producers=load_producer_keys(region))
    harmful, benign = "ab" * 16, "cd" * 16
    refused: list[EnforcementCommand] = []

    async def on_command(msg: Msg) -> None:
        command = decode_command(msg.data)
        if command.account_id == "prompt:" + harmful and "block" in command.interventions:
            refused.append(command)

    await nc.subscribe(f"sg.{region}.enforce.>", cb=on_command)
    signals = []
    for i, (account, link, cyber) in enumerate(
            [("fresh-1", harmful, 0.8), ("fresh-2", harmful, 0.8), ("fresh-3", harmful, 0.8),
             ("fresh-4", benign, 0.1)]):
        signals += [
            Signal(f"req-{i}", account, region, T0, f"c{i}", RequestObserved(
                f"r{i}", "m", "proxy", 1, 1, 10, "0" * 64, False, "intervene",
                prompt_link=link)),
            score_signal(region, account, f"score-{i}", T0, (("cyber", cyber),),
                         request_id=f"r{i}")]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, P, signals)
        # the signals, the three forwarded scores, and the three members told of the enforcement
        await wait_until(lambda: node.metrics.committed == len(signals) + 6)
        await wait_until(lambda: bool(refused))
        node.request_stop()
    assert node.metrics.dead_lettered == 0
    prompt = await store.history("prompt:" + harmful)
    members = [e.body.member_account for e in prompt if isinstance(e.body, ScoreRecorded)]
    assert sorted(m for m in members if m) == ["fresh-1", "fresh-2", "fresh-3"]
    assert refused[-1].level >= 2 and len(refused) == 1
    for account in ("fresh-1", "fresh-2", "fresh-3"):
        linked = [e.body for e in await store.history(account)
                  if isinstance(e.body, AccountLinked)]
        assert [(b.link, b.aggregate) for b in linked] == [("prompt", "prompt:" + harmful)]
        told = [e.body for e in await store.history(account)
                if isinstance(e.body, AggregateEnforced)]
        assert [(b.aggregate, b.level >= 2) for b in told] == [("prompt:" + harmful, True)]
    assert not [e for e in await store.history("fresh-4") if isinstance(e.body, AccountLinked)]
    assert await store.history("prompt:" + benign) == []
    assert await store.pending_outbox(10) == []
