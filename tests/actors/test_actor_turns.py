"""An actor's turn in a commit cycle takes its waiting signals in order, not only the head one:
a busy account (an organisation hearing of all its members) commits its backlog in one cycle."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from checker import check_end_to_end, score_signal
from nats.aio.client import Client

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.events import ScoreRecorded, Signal
from safeguards.core.ports import AppendRequest, AppendResult

from bus_support import publish_signals, wait_until

P = 2
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class CycleStore(InMemoryEventStore):
    """Records each group commit's requests as (account, expected version)."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.cycles: list[list[tuple[str, int]]] = []

    async def append_batch(self, requests: Sequence[AppendRequest]
                           ) -> list[AppendResult | ConcurrencyConflict]:
        self.cycles.append([(r.account_id, r.expected_version) for r in requests])
        return await super().append_batch(requests)


async def _run(nats_url: str, nc: Client, signals: list[Signal], committed: int,
               **settings: Any) -> tuple[Node, CycleStore, str]:
    region = signals[0].region
    store = CycleStore(region)
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.2, **settings),
                static_partitions=range(P))
    js = nc.jetstream()
    await provision_region(js, region)
    await publish_signals(js, region, P, signals)  # all waiting before the node fetches
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: node.metrics.committed == committed, 30)
        node.request_stop()
    return node, store, region


def _signals(region: str, names: list[str]) -> list[Signal]:
    return [score_signal(region, "acct-busy", name, T0, (("cyber", 0.7),)) for name in names]


async def _scored(store: CycleStore) -> list[str]:
    return [e.body.request_id for e in await store.history("acct-busy")
            if isinstance(e.body, ScoreRecorded)]


@pytest.mark.parametrize("turn_signals", [16, 1])
async def test_a_busy_accounts_waiting_signals_commit_together_in_order(
        nc: Client, nats_url: str, turn_signals: int) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    names = [f"s-{i:02d}" for i in range(12)]
    signals = _signals(region, names)
    node, store, _ = await _run(nats_url, nc, signals, len(signals), turn_signals=turn_signals)
    assert await _scored(store) == names  # decided in the order they came
    per_cycle = [Counter(a for a, _ in cycle)["acct-busy"] for cycle in store.cycles]
    if turn_signals == 1:  # one signal a cycle: twelve cycles
        assert max(per_cycle) == 1 and sum(per_cycle) == 12
    else:  # each append of a turn expects the version its predecessor leads to
        assert max(per_cycle) > 1 and len([n for n in per_cycle if n]) < 12
        for cycle in store.cycles:
            versions = [v for a, v in cycle if a == "acct-busy"]
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert node.metrics.conflicts == 0
    assert (await check_end_to_end(store, nc.jetstream(), region, signals)).ok


async def test_a_later_signal_whose_decision_fails_is_rejected_as_the_next_head(
        nc: Client, nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from safeguards.actors import turns
    from safeguards.core.decide import decide_and_fold as real

    def buggy(state: Any, signal: Signal, policy: Any, now: datetime) -> Any:
        if signal.signal_id == "s-2":
            raise ZeroDivisionError("a bug in deciding")
        return real(state, signal, policy, now)

    monkeypatch.setattr(turns, "decide_and_fold", buggy)
    region = "t" + uuid.uuid4().hex[:8]
    signals = _signals(region, ["s-1", "s-2", "s-3", "s-4"])
    node, store, _ = await _run(nats_url, nc, signals, 3, reject_after_deliveries=1)
    await wait_until(lambda: node.metrics.dead_lettered == 1, 10)
    # the turn stopped before it; as the head of the next turn it was rejected once, loudly
    assert node.metrics.decide_errors == 1
    assert await _scored(store) == ["s-1", "s-3", "s-4"]
