"""Actor life cycle on a real NATS: passivation, bounded mailboxes, rejected signals, drain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
from checker import check_end_to_end, score_signal
from nats.aio.client import Client

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.dlq import H_ERROR, H_REASON
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.operators import OperatorRegistry, OperatorSigner, add_operator
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.events import OperatorActionTaken, ScoreRecorded, Signal
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.subjects import inputs_subject, stream_name

from bus_support import publish_signals, wait_until
from store_events import make_event

P = 2
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def actors_in_memory(node: Node) -> int:
    return sum(len(r.worker.actors) for r in node.running.values())


def memory_node(nats_url: str, clock: ManualClock,
                **settings: Any) -> tuple[Node, InMemoryEventStore, str]:
    """A node of a fresh region over an in-memory store, owning every partition."""
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    add_operator(region, "op", "admin")
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=clock,
                settings=NodeSettings(fetch_timeout_s=0.2, **settings),
                static_partitions=range(P), operators=OperatorRegistry(region))
    return node, store, region


async def test_passivated_actor_holds_nothing_and_resumes_from_the_store(
    nc: Client, nats_url: str
) -> None:
    js = nc.jetstream()
    clock = ManualClock(T0)
    node, store, region = memory_node(nats_url, clock, passivate_after_s=60)
    first = [score_signal(region, "acct-p", f"a-{i}", T0, (("jailbreak", 0.8),))
             for i in range(3)]
    second = [score_signal(region, "acct-p", f"b-{i}", T0, (("jailbreak", 0.8),))
              for i in range(3)]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, P, first)
        await wait_until(lambda: node.metrics.committed == 3)
        assert actors_in_memory(node) == 1
        clock.advance(61)  # idle past the passivation age
        await wait_until(lambda: actors_in_memory(node) == 0)
        await publish_signals(js, region, P, second)
        await wait_until(lambda: node.metrics.committed == 6)
        node.request_stop()
    assert node.metrics.passivated == 1
    # Re-activated on a guess that the account was new; the version fence refused it and the
    # actor loaded what the store had, then decided again.
    assert node.metrics.activations_refused == 1 and node.metrics.loads == 1
    history = await store.history("acct-p")
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert sum(isinstance(e.body, ScoreRecorded) for e in history) == 6
    assert (await check_end_to_end(store, js, region, first + second)).ok


async def test_full_mailbox_pauses_the_partition_and_loses_nothing(
    nc: Client, nats_url: str
) -> None:
    js = nc.jetstream()
    node, store, region = memory_node(nats_url, ManualClock(T0), mailbox_capacity=2)
    signals = [score_signal(region, "acct-hot", f"h-{i}", T0, (("cyber", 0.1),))
               for i in range(12)]
    await provision_region(js, region)
    # all in the stream before the node fetches a batch
    await publish_signals(js, region, P, signals)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: node.metrics.committed == len(signals), 30)
        node.request_stop()
    assert node.metrics.mailbox_full > 0  # the batch parked behind the full mailbox
    assert node.metrics.redelivery_requested == 0 and node.metrics.dead_lettered == 0
    assert (await check_end_to_end(store, js, region, signals)).ok


async def test_signal_that_fails_its_decision_is_dead_lettered_after_bounded_retries(
    nc: Client, nats_url: str
) -> None:
    js = nc.jetstream()
    node, store, region = memory_node(nats_url, ManualClock(T0), reject_after_deliveries=2)
    # Decodes fine and a registered operator signed it, but it names a level the policy's
    # ladder does not have.
    bad = Signal("bad-1", "acct-b", region, T0, "c",
                 OperatorActionTaken("op", "set_level", 42, None, "typo"))
    good = [score_signal(region, "acct-b", f"g-{i}", T0, (("cyber", 0.1),)) for i in range(3)]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        subject, data = inputs_subject(region, P, "acct-b"), encode_signal(bad)
        await js.publish(subject, data, headers=OperatorSigner("op").headers(subject, data))
        await publish_signals(js, region, P, good)
        await wait_until(lambda: node.metrics.dead_lettered == 1
                         and node.metrics.committed == 3, 30)
        node.request_stop()
    assert node.metrics.redelivery_requested == 1  # one retry, then the dead-letter stream
    sub = await js.pull_subscribe(f"sg.{region}.dlq.>", durable=None,
                                  stream=stream_name(region, "DLQ"))
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.headers is not None
    assert msg.headers[H_REASON] == "rejected" and msg.headers[H_ERROR] == "InvalidInput"
    assert node.metrics.decide_errors == 0  # bad input, not a bug
    assert not await store.inbox_contains("bad-1")
    assert (await check_end_to_end(store, js, region, good)).ok


class RecordingStore(InMemoryEventStore):
    """Records what each group commit carried; with ``hold_first``, holds the first one until
    ``release`` is set."""

    def __init__(self, region: str, *, hold_first: bool = False) -> None:
        super().__init__(region)
        self.hold_first = hold_first
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.cycles: list[list[tuple[str, int]]] = []  # (account, expected version)
        self.committed: list[dict[str, int]] = []  # account -> version after each cycle

    async def append_batch(self, requests: Sequence[AppendRequest]
                           ) -> list[AppendResult | ConcurrencyConflict]:
        self.cycles.append([(r.account_id, r.expected_version) for r in requests])
        if self.hold_first and len(self.cycles) == 1:
            self.entered.set()
            await self.release.wait()
        results = await super().append_batch(requests)
        self.committed.append({r.account_id: r.version for r in results
                               if isinstance(r, AppendResult)})
        return results


async def test_a_coding_error_in_deciding_is_loud_and_dead_lettered_as_such(
    nc: Client, nats_url: str, monkeypatch: Any
) -> None:
    from safeguards.actors import turns
    from safeguards.core.decide import decide_and_fold as real

    def buggy(state: Any, signal: Signal, policy: Any, now: datetime) -> Any:
        if signal.signal_id == "bug-1":
            raise ZeroDivisionError("a bug in deciding")
        return real(state, signal, policy, now)

    monkeypatch.setattr(turns, "decide_and_fold", buggy)
    js = nc.jetstream()
    node, _, region = memory_node(nats_url, ManualClock(T0), reject_after_deliveries=1)
    signals = [score_signal(region, "acct-c", "bug-1", T0, (("cyber", 0.1),)),
               score_signal(region, "acct-c", "ok-1", T0, (("cyber", 0.1),))]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, P, signals)
        await wait_until(lambda: node.metrics.dead_lettered == 1
                         and node.metrics.committed == 1, 30)
        node.request_stop()
    assert node.metrics.decide_errors == 1
    sub = await js.pull_subscribe(f"sg.{region}.dlq.>", durable=None,
                                  stream=stream_name(region, "DLQ"))
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.headers is not None
    assert msg.headers[H_REASON] == "decide_failed"
    assert msg.headers[H_ERROR] == "ZeroDivisionError"


async def test_signals_arriving_during_a_commit_go_with_the_next_cycle(
    nc: Client, nats_url: str
) -> None:
    """A partition keeps routing while a commit cycle is in the store: what arrives meanwhile
    (another account's signal, and the committing account's next one) is decided the moment that
    cycle ends, on the state it committed, and goes in the very next cycle."""
    js = nc.jetstream()
    region = "t" + uuid.uuid4().hex[:8]
    store = RecordingStore(region, hold_first=True)
    node = Node(region=region, partitions=1, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.2),
                static_partitions=[0])
    a1, a2, b1 = (score_signal(region, acct, sid, T0, (("cyber", 0.1),))
                  for acct, sid in (("acct-a", "a-1"), ("acct-a", "a-2"), ("acct-b", "b-1")))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, 1, [a1])
        with anyio.fail_after(10):
            await store.entered.wait()
        await publish_signals(js, region, 1, [a2, b1])
        await wait_until(lambda: node.metrics.received == 3)  # routed while the cycle waits
        store.release.set()
        await wait_until(lambda: node.metrics.committed == 3)
        node.request_stop()
    first, second = store.cycles
    assert first == [("acct-a", 0)]
    assert sorted(second) == [("acct-a", store.committed[0]["acct-a"]), ("acct-b", 0)]
    assert (await check_end_to_end(store, js, region, [a1, a2, b1])).ok


async def test_a_partition_that_meets_existing_accounts_loads_them_before_deciding(
    nc: Client, nats_url: str
) -> None:
    """Activating on the initial state is a guess that pays for new accounts; a partition that
    keeps meeting existing ones (a takeover, a restart) soon loads first instead, and goes back
    to guessing once first-seen accounts are new again."""
    js = nc.jetstream()
    clock = ManualClock(T0)
    node, store, region = memory_node(nats_url, clock)
    old = [f"old-{i}" for i in range(200)]
    for account in old:  # history written before this node ever ran
        await store.append(AppendRequest(account, 0, (make_event(account, region, 1),)))
    existing = [score_signal(region, a, f"e-{a}", T0, (("cyber", 0.1),)) for a in old]
    fresh = [score_signal(region, f"new-{i}", f"n-{i}", T0, (("cyber", 0.1),))
             for i in range(200)]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await publish_signals(js, region, P, existing)
        await wait_until(lambda: node.metrics.committed == len(existing), 30)
        refused_on_existing = node.metrics.activations_refused
        await publish_signals(js, region, P, fresh)
        await wait_until(lambda: node.metrics.committed == len(existing) + len(fresh), 30)
        node.request_stop()
    assert refused_on_existing <= 2 * 20  # about a score per partition, then loads first
    assert node.metrics.loads >= len(existing)
    assert node.metrics.loads < len(existing) + len(fresh) // 2  # guessing again on new ones
    assert (await check_end_to_end(store, js, region, existing + fresh)).ok


async def test_a_commit_cycle_carries_at_most_its_share_of_each_partition(
    nc: Client, nats_url: str
) -> None:
    js = nc.jetstream()
    region = "t" + uuid.uuid4().hex[:8]
    store = RecordingStore(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0),
                settings=NodeSettings(fetch_timeout_s=0.2, commit_max_appends=6),
                static_partitions=range(P))
    signals = [score_signal(region, f"acct-{i}", f"c-{i}", T0, (("cyber", 0.1),))
               for i in range(40)]
    await provision_region(js, region)
    await publish_signals(js, region, P, signals)  # a backlog in both partitions
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: node.metrics.committed == len(signals), 30)
        node.request_stop()
    sizes = [len(cycle) for cycle in store.cycles]
    assert max(sizes) <= 6  # 3 per partition
    assert sum(sizes) == len(signals)
    assert (await check_end_to_end(store, js, region, signals)).ok
