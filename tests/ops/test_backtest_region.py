"""Region backtests over a real store: the in-memory twin and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from node_support import run_cli

from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore, migrate
from safeguards.core.policy import parse_policy
from safeguards.core.ports import AppendRequest, EventStore
from safeguards.ops.backtest import backtest_region

from golden_events import GOLDEN, benign_history, golden_history, rerouted_history

GOLDEN_POLICY = (GOLDEN / "policy-default-2026.11.1.toml").read_text()


async def _fill(store: EventStore) -> int:
    total = 0
    for index in (0, 1):
        history = golden_history(index)
        await store.append(AppendRequest(history[0].account_id, 0, tuple(history)))
        total += len(history)
    for n in (1, 2, 3):  # most accounts benign: the two others are read by history, not feed
        await store.append(AppendRequest(f"benign-{n}", 0, benign_history(f"benign-{n}", 6)))
    return total + 18


async def _check(store: EventStore) -> None:
    total = await _fill(store)
    same = await backtest_region(store, parse_policy(GOLDEN_POLICY))
    assert (same.accounts, same.events, same.differing) == (5, total, [])
    # the benign accounts cannot differ under a policy that strikes no lower than 0.35: counted,
    # not replayed
    assert same.skipped_accounts == 3 and same.replayed_events == total - 18
    lax = parse_policy(GOLDEN_POLICY.replace("threshold = 0.5", "threshold = 0.99"))
    report = await backtest_region(store, lax, page=7)
    assert [r.account_id for r in report.differing] == ["golden-acct-1", "golden:acct.2"]
    assert "strikes 5 -> 1" in report.render()
    # a candidate striking cyber from 0.1 must replay the benign account too: it now differs
    eager = parse_policy(GOLDEN_POLICY.replace("[categories.cyber]\nthreshold = 0.6",
                                               "[categories.cyber]\nthreshold = 0.1"))
    everyone = await backtest_region(store, eager)
    assert everyone.skipped_accounts == 0 and everyone.accounts == 5
    assert {"benign-1", "benign-3"} <= {r.account_id for r in everyone.differing}
    late = golden_history()[-1].occurred_at + timedelta(days=1)
    assert (await backtest_region(store, lax, since=late)).accounts == 0


async def test_backtest_region_in_memory() -> None:
    await _check(InMemoryEventStore("eu"))


async def test_backtest_region_postgres(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    async with PostgresEventStore("eu", fresh_database_url) as store:
        await _check(store)


async def test_a_history_that_took_another_path_to_the_same_totals_differs(
        fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stored: L2 at v36 and L1 at v40, where the policy decides L1 then L2 (as many changes, as
    high, to the same end): the region backtest reports it, and where the paths part."""
    await migrate(fresh_database_url)
    rerouted = rerouted_history({36: (0, 2, "escalate.points"), 40: (2, 1, "escalate.points")})
    async with PostgresEventStore("eu", fresh_database_url) as store:
        await store.append(AppendRequest("golden-acct-1", 0, tuple(rerouted)))
        report = await backtest_region(store, parse_policy(GOLDEN_POLICY))
    assert [r.account_id for r in report.differing] == ["golden-acct-1"]
    said = "path differs from v34: L2 by escalate.points -> L1 by escalate.points"
    assert f"  golden-acct-1: {said}" in report.render()
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(GOLDEN_POLICY)
    capsys.readouterr()
    assert await run_cli("ops", "backtest", "--policy", str(candidate), "--region", "eu",
                         "--database-url", fresh_database_url, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["differing"] == [{"account": "golden-acct-1", "change": said, "base_version": 0,
                                 "first_divergence": {"version": 34,
                                                      "stored": [2, "escalate.points"],
                                                      "candidate": [1, "escalate.points"]}}]
