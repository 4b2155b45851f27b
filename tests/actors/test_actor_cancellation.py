"""Cancellation: a node cancelled while a commit cycle is in the store (or right after it
committed, before the acks) loses nothing and applies nothing twice. The next node on the same
bus and store decides what was not acked, and the inbox absorbs what was committed but not
acked. On the in-memory bus and store, so the moment of the cancel is chosen, not raced."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import pytest
from checker import score_signal

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.events import ScoreRecorded
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.subjects import inputs_subject

from bus_support import wait_until

P = 2
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class HeldStore(InMemoryEventStore):
    """Holds its next commit cycle: ``before`` (nothing written yet) or ``after`` (written, the
    answer not yet returned), until the test cancels the node."""

    def __init__(self, region: str, hold: str) -> None:
        super().__init__(region)
        self.hold = hold
        self.held = anyio.Event()
        self.armed = True

    async def append_batch(self, requests: Sequence[AppendRequest]
                           ) -> list[AppendResult | ConcurrencyConflict]:
        if not self.armed:
            return await super().append_batch(requests)
        self.armed = False
        if self.hold == "before":
            self.held.set()
            await anyio.sleep_forever()
        results = await super().append_batch(requests)
        self.held.set()
        await anyio.sleep_forever()
        return results


def node(broker: MemoryBroker, store: InMemoryEventStore) -> Node:
    return Node(region=broker.region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.05,
                                                             relay_poll_s=0.05),
                static_partitions=range(P))


@pytest.mark.parametrize("hold", ["before", "after"])
async def test_a_node_cancelled_mid_commit_loses_nothing_and_repeats_nothing(hold: str) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    broker = MemoryBroker(region, backoff=(0.5, 0.5, 0.5))  # what was held comes back soon
    store = HeldStore(region, hold)
    signals = [score_signal(region, f"acct-{i % 6}", f"sig-{i}", T0, (("cyber", 0.65),))
               for i in range(30)]
    for s in signals:
        broker.publish_input(inputs_subject(region, P, s.account_id), encode_signal(s))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(node(broker, store).run)
            await store.held.wait()
            tg.cancel_scope.cancel()  # the node is gone mid-cycle: no drain, no acks

    second = node(broker, store)
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 20)
        second.request_stop()

    scored = [e.body.request_id for a in {s.account_id for s in signals}
              for e in await store.history(a) if isinstance(e.body, ScoreRecorded)]
    assert sorted(scored) == sorted(s.signal_id for s in signals)  # each exactly once
    assert not broker.dead_letters
