"""Linked accounts across actors, on the in-memory bus and store: two accounts name their
organisation, a third is known to it only from the classifier's copy of its score; the
organisation's own history is escalated past the policy's trigger level, and through the
outboxes (MemberLinked up, AggregateEnforced down) every member starts at the linked level in
its own history, with its own enforcement command, each told once."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import anyio
from checker import score_signal

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.events import (
    AggregateEnforced,
    EnforcementChanged,
    MemberLinked,
    RequestObserved,
    ScoreRecorded,
    Signal,
)
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
