"""The EventStore reads a backtest makes, on every backend (``store`` in this folder's conftest):
several whole histories at once, and each account's highest strike potential."""

from __future__ import annotations

from datetime import timedelta

import pytest

from safeguards.core.errors import InvalidAccountId

from store_events import T0, StoreUnderTest, make_request


async def test_several_histories_at_once_and_every_accounts_strike_potential(
        store: StoreUnderTest) -> None:
    # versions 1, 2, 3: a request (0), a score of 0.9, a strike (a decision: 1)
    await store.append_batch([make_request("a", store.region, 0, 1),
                              make_request("b", store.region, 0, 2),
                              make_request("c", store.region, 0, 3)])
    await store.append(make_request("b", store.region, 2, 1))
    some = await store.histories(["b", "c", "nobody"])
    assert sorted(some) == ["b", "c"]
    assert [e.version for e in some["b"]] == [1, 2, 3]
    assert some["c"] == await store.history("c")
    assert await store.histories([]) == {}
    with pytest.raises(InvalidAccountId):
        await store.histories(["bad account"])
    risks = await store.account_risks()
    assert [(r.account_id, r.events_since) for r in risks] == [("a", 1), ("b", 3), ("c", 3)]
    assert [r.strike_potential for r in risks] == pytest.approx([0.0, 1.0, 1.0])
    later = await store.account_risks(since=T0 + timedelta(seconds=2))
    assert [(r.account_id, r.events_since) for r in later] == [("a", 0), ("b", 2), ("c", 2)]
    await store.append(make_request("d", store.region, 0, 2))
    (d,) = [r for r in await store.account_risks() if r.account_id == "d"]
    assert d.strike_potential == pytest.approx(0.9, abs=1e-6)  # its score's, nothing decided
