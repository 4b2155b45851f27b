"""A node on the in-memory bus and store, driven by generated traffic and compared with the pure
model: every distinct signal decided exactly once in its account's order, duplicates absorbed by
the inbox, poison dead-lettered alone, and the newest enforcement command equal to the level the
history ends at. No NATS, no PostgreSQL: the bus port's twin makes the actors testable alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
from checker import score_signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.decide import decide_and_fold
from safeguards.core.events import Signal
from safeguards.core.policy import default_policy
from safeguards.core.state import initial_state
from safeguards.core.subjects import enforce_subject, inputs_subject

from bus_support import wait_until

P = 3
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ACCOUNTS = [f"acct-{i}" for i in range(5)]

score = st.tuples(st.sampled_from(["weapons", "cyber", "jailbreak", "violence"]),
                  st.sampled_from([0.05, 0.45, 0.65, 0.8, 0.95]))
action = st.one_of(
    st.tuples(st.just("score"), st.sampled_from(ACCOUNTS), score),
    st.tuples(st.just("again"), st.integers(0, 1000)),  # re-publish an earlier signal
    st.tuples(st.just("poison"), st.binary(min_size=1, max_size=40)),
)


async def run(actions: list[tuple[object, ...]]) -> None:
    region = "s" + uuid.uuid4().hex[:8]
    broker = MemoryBroker(region)
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.05,
                                                             relay_poll_s=0.05),
                static_partitions=range(P))
    sent: list[Signal] = []
    poison = 0
    for a in actions:
        if a[0] == "score":
            account, pair = str(a[1]), a[2]
            assert isinstance(pair, tuple)
            sent.append(score_signal(region, account, f"sig-{len(sent)}", T0,
                                     ((str(pair[0]), float(pair[1])),)))
            s = sent[-1]
        elif a[0] == "again" and sent:
            s = sent[int(a[1]) % len(sent)]  # type: ignore[call-overload]
        elif a[0] == "poison":
            poison += 1
            junk = a[1]
            assert isinstance(junk, bytes)
            broker.publish_input(inputs_subject(region, P, ACCOUNTS[poison % 5]), junk)
            continue
        else:
            continue
        broker.publish_input(inputs_subject(region, P, s.account_id), encode_signal(s))

    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 30)
        node.request_stop()

    assert len(broker.dead_letters) == poison
    assert {d.reason for d in broker.dead_letters} <= {"undecodable"}
    policy = default_policy()
    for account in ACCOUNTS:
        # the model: the account's distinct signals, in the order they were first published
        state, expected = initial_state(account, region), []
        for s in sent:
            if s.account_id == account:
                events, state = decide_and_fold(state, s, policy, T0)
                expected += [type(e.body).__name__ for e in events]
        history = await store.history(account)
        assert [type(e.body).__name__ for e in history] == expected
        stored = await store.load(account)
        assert (stored.level, stored.version) == (state.level, state.version)
        newest = broker.commands.get(enforce_subject(region, account))
        if newest:
            assert decode_command(newest[-1][1]).level == state.level
        else:
            assert state.level == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40))
def test_a_node_on_the_memory_bus_matches_the_model(actions: list[tuple[object, ...]]) -> None:
    anyio.run(run, actions)
