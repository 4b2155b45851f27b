"""Linked accounts across actors, on the in-memory bus and store: two accounts name their
organisation, a third is known to it only from the classifier's copy of its score; the
organisation's own history is escalated past the policy's trigger level, and through the
outboxes (MemberLinked up, AggregateEnforced down) every member starts at the linked level in
its own history, with its own enforcement command, each told once; and per episode: a live
policy change lowering the trigger, then a clear and a second enforcement, reach the members
through the same outboxes."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import anyio
from checker import score_signal
from policies import policy_text

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.operators import OperatorRegistry, OperatorSigner, add_operator
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.events import (
    AggregateEnforced,
    EnforcementChanged,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    Signal,
)
from safeguards.core.policy import default_policy, parse_policy
from safeguards.core.subjects import enforce_subject, inputs_subject

from bus_support import wait_until

P = 3
T0 = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
ORG = "org:acme"
MEMBERS = ("a", "b", "c")


async def test_an_enforced_organisation_starts_its_members_at_the_linked_level() -> None:
    region = "l" + uuid.uuid4().hex[:8]
    broker = MemoryBroker(region)
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0),
                settings=NodeSettings(fetch_timeout_s=0.05, relay_poll_s=0.05),
                static_partitions=range(P))
    signals = [Signal(f"req-{m}", m, region, T0, f"c-{m}", RequestObserved(
        f"r-{m}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow", organization_id="acme"))
        for m in ("a", "b")]
    # the classifier's copy of c's score in the organisation's history: weapons at 0.97 is
    # severe, high-confidence evidence (the organisation jumps to L3)
    own = score_signal(region, ORG, "org-score-c", T0, (("weapons", 0.97),))
    assert isinstance(own.observation, ScoreRecorded)
    signals.append(dataclasses.replace(
        own, observation=dataclasses.replace(own.observation, member_account="c")))
    for s in signals:
        broker.publish_input(inputs_subject(region, P, s.account_id), encode_signal(s))

    def linked() -> bool:
        newest = [broker.commands.get(enforce_subject(region, m)) for m in MEMBERS]
        return all(c and decode_command(c[-1][1]).level == 1 for c in newest) and not any(
            broker.pending(p) for p in range(P))

    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(linked, 30)
        node.request_stop()

    assert broker.dead_letters == []
    org = await store.history(ORG)
    assert sorted(e.body.member_account for e in org if isinstance(e.body, MemberLinked)) == [
        "a", "b"]
    assert (await store.load(ORG)).level >= 2
    for m in MEMBERS:
        history = await store.history(m)
        told = [e.body for e in history if isinstance(e.body, AggregateEnforced)]
        assert len(told) == 1 and told[0].aggregate == ORG  # each told once
        [change] = [e.body for e in history if isinstance(e.body, EnforcementChanged)]
        assert (change.previous_level, change.level, change.rule_id) == (0, 1, "link.enforced")
        [(_, newest)] = broker.commands[enforce_subject(region, m)]
        assert decode_command(newest).level == 1


def _org_score(region: str, member: str, i: int) -> Signal:
    """The classifier's copy of ``member``'s severe score in the organisation's history."""
    own = score_signal(region, ORG, f"org-score-{member}-{i}", T0, (("weapons", 0.97),))
    assert isinstance(own.observation, ScoreRecorded)
    return dataclasses.replace(
        own, observation=dataclasses.replace(own.observation, member_account=member))


async def test_a_lowered_trigger_and_a_second_episode_reach_the_members_through_the_node(
) -> None:
    """The node starts under a policy whose trigger (L4) the organisation never reaches; a live
    policy change lowers it to L2 and the organisation's next decision tells every member; an
    operator clears the organisation and one member, the organisation is enforced again, and the
    new episode raises that member again; a redelivered signal changes nothing."""
    region = "l" + uuid.uuid4().hex[:8]
    broker, store = MemoryBroker(region), InMemoryEventStore(region)
    add_operator(region, "op", "admin")
    signer = OperatorSigner("op")
    high = parse_policy(policy_text(version="t4-").replace("linked_trigger_level = 2",
                                                           "linked_trigger_level = 4"))
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), policy=high,
                settings=NodeSettings(fetch_timeout_s=0.05, relay_poll_s=0.05),
                static_partitions=range(P), operators=OperatorRegistry(region))

    def publish(s: Signal, operator: bool = False) -> None:
        subject, data = inputs_subject(region, P, s.account_id), encode_signal(s)
        broker.publish_input(subject, data, signer.headers(subject, data) if operator else None)

    def levels(m: str) -> list[int]:
        return [decode_command(c).level for _, c in broker.commands.get(enforce_subject(region, m),
                                                                        [])]

    def idle() -> bool:
        return not any(broker.pending(p) for p in range(P))

    def operator(entity: str, i: int) -> Signal:
        return Signal(f"op-{entity}-{i}", entity, region, T0, f"op-{i}", OperatorActionTaken(
            "op", "clear", None, None, "confirmed benign"))

    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        for m in ("a", "b"):
            publish(Signal(f"req-{m}", m, region, T0, f"c-{m}", RequestObserved(
                f"r-{m}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow",
                organization_id="acme")))
        publish(_org_score(region, "c", 1))
        await wait_until(lambda: idle() and bool(levels(ORG)), 30)
        assert all(levels(m) == [] for m in MEMBERS)  # L3 is below this policy's trigger
        node._apply_policy(default_policy())  # what the policy board hands the node (L2)
        publish(_org_score(region, "b", 2))  # the organisation's next decision
        await wait_until(lambda: idle() and all(levels(m) == [1] for m in MEMBERS), 30)
        publish(operator(ORG, 1), operator=True)
        publish(operator("a", 2), operator=True)
        await wait_until(lambda: idle() and levels("a") == [1, 0] and levels(ORG)[-1] == 0, 30)
        again = _org_score(region, "a", 3)
        publish(again)  # enforced again: a new episode
        await wait_until(lambda: idle() and levels("a") == [1, 0, 1], 30)
        publish(again)  # a redelivery: the organisation's inbox absorbs it
        await wait_until(idle, 30)
        node.request_stop()

    assert broker.dead_letters == []
    episodes = [(b.phase, b.trigger_level, e.policy_version) for e in await store.history(ORG)
                if isinstance(b := e.body, LinkedEpisode)]
    assert episodes == [
        ("opened", 2, default_policy().version)] * 2
    for m in MEMBERS:
        history = await store.history(m)
        told = [e.body for e in history if isinstance(e.body, AggregateEnforced)]
        assert len(told) == 2  # once per episode
    assert (levels("a"), levels("b"), levels("c")) == ([1, 0, 1], [1], [1])
