"""Backtests, explanations, RCA reports and past states over histories retention truncated,
against PostgreSQL.

Once retention removed an account's oldest events, its kept events are not its history: they
continue from its retention base (the state at the last removed version). A backtest replays
them from the base (the stored policy then reproduces what it decided, where a replay from an
empty state would not), explanations say where the history starts and carry the base's risk to
the decision, and a point before the base is a ``VersionGap``, never a wrong answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from node_support import run_cli

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.event_retention import EventRetention, truncate_events
from safeguards.adapters.store.retention_base import base_state
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.backtest import backtest
from safeguards.core.errors import VersionGap
from safeguards.core.policy import parse_policy
from safeguards.core.ports import AppendRequest
from safeguards.core.state import fold, initial_state
from safeguards.ops.backtest import backtest_region
from safeguards.ops.console import pages
from safeguards.ops.console.pages import explanation
from safeguards.ops.console.reads import MarkerCache, PlotCache
from safeguards.ops.explain import BeforeRetentionBase, explain, render

from golden_events import GOLDEN, benign_history, golden_history

GOLDEN_POLICY = (GOLDEN / "policy-default-2026.11.1.toml").read_text()
LAX = parse_policy(GOLDEN_POLICY.replace("threshold = 0.5", "threshold = 0.99"))
# Between the golden histories' v36 (L1, three strikes) and v37: the retention cutoff
CUT = datetime(2026, 11, 4, 10, 50, tzinfo=UTC)
BASE = 36
L3_CHANGE = 56  # L2 -> L3, on strikes before and after the base
TTL = EventRetention(30 * 86400)
GOLDEN_ACCOUNTS = ("golden-acct-1", "golden:acct.2")


async def _truncated(url: str, *, benign: bool) -> None:
    """The two golden histories (and three benign accounts) with everything before the cutoff
    removed by retention: the golden ones keep v37..v76, the benign ones their newest event."""
    await migrate(url)
    async with PostgresEventStore("eu", url, snapshot_every=1000) as store:
        for index in (0, 1):
            history = golden_history(index)
            await store.append(AppendRequest(history[0].account_id, 0, tuple(history)))
        for n in (1, 2, 3) if benign else ():
            await store.append(AppendRequest(f"benign-{n}", 0, benign_history(f"benign-{n}", 6)))
        assert (await backtest_region(store, parse_policy(GOLDEN_POLICY))).differing == []
        removed = await truncate_events(store, TTL, CUT + timedelta(days=30))
        assert removed == {"events": 2 * BASE + (15 if benign else 0),
                           "accounts": 5 if benign else 2, "refused": 0}
        assert (await store.history("golden-acct-1"))[0].version == BASE + 1


@pytest.mark.parametrize("benign", [True, False], ids=["by-history", "feed-pass"])
async def test_a_backtest_replays_a_truncated_history_from_its_retention_base(
        fresh_database_url: str, benign: bool) -> None:
    await _truncated(fresh_database_url, benign=benign)
    tail = [e for e in golden_history() if e.version > BASE]
    async with PostgresEventStore("eu", fresh_database_url) as store:
        # the policy that decided the history decides its kept part the same from the base
        same = await backtest_region(store, parse_policy(GOLDEN_POLICY))
        assert same.differing == [] and same.not_replayed == []
        assert (same.accounts, same.events) == ((5, 2 * len(tail) + 3) if benign
                                                else (2, 2 * len(tail)))
        assert same.based_accounts == 2  # the benign bases decided nothing: counted, unreplayed
        assert same.skipped_accounts == (3 if benign else 0)
        assert "2 account(s) replayed from their retention base" in same.render()
        for since in (CUT - timedelta(days=3), tail[10].occurred_at):  # before it, within it
            window = await backtest_region(store, parse_policy(GOLDEN_POLICY), since=since)
            assert window.differing == [] and window.based_accounts == 2
        base = fold(initial_state("golden-acct-1", "eu"), golden_history()[:BASE])
        again = backtest(tail, parse_policy(GOLDEN_POLICY), start=base)
        assert again.candidate.changes == again.stored.changes  # each level, rule and time
        # (from an empty state the kept events escalate to L1, not L2, and reach L3 by another
        # rule: a comparison this coarse called that the same), so they never start there
        with pytest.raises(VersionGap):
            backtest(tail, parse_policy(GOLDEN_POLICY))

        lax = await backtest_region(store, LAX)
        assert [r.account_id for r in lax.differing] == sorted(GOLDEN_ACCOUNTS)
        result = lax.differing[0]
        assert result.base_version == BASE and result.events_replayed == len(tail)
        # the stored trajectory is the kept one, starting at the base's L1
        assert result.stored.strikes == 2 and result.stored.max_level == 4
        assert [c[1] for c in result.stored.changes] == [2, 3, 4, 0]
        assert result == backtest(tail, LAX, start=base)
        assert f"(from its retention base at v{BASE}; v1..v{BASE} removed by retention)" \
            in lax.render()


async def test_a_backtest_lists_accounts_whose_base_this_build_cannot_read(
        fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    await _truncated(fresh_database_url, benign=True)
    monkeypatch.setattr(fold_module, "FOLD_VERSION", fold_module.FOLD_VERSION + 1)  # no upcaster
    monkeypatch.setattr(codec, "FOLD_VERSION", fold_module.FOLD_VERSION)
    async with PostgresEventStore("eu", fresh_database_url) as store:
        report = await backtest_region(store, parse_policy(GOLDEN_POLICY))
    # neither replayed from their kept events alone nor counted as treated the same (the
    # benign accounts' bases too: what they hold cannot be read)
    everyone = sorted([*GOLDEN_ACCOUNTS, "benign-1", "benign-2", "benign-3"])
    assert report.not_replayed == everyone
    assert (report.accounts, report.differing) == (0, [])
    assert "NOT REPLAYED: 5 account(s)" in report.render()
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(GOLDEN_POLICY)
    capsys.readouterr()
    assert await run_cli("ops", "backtest", "--policy", str(candidate), "--region", "eu",
                         "--database-url", fresh_database_url, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["not_replayed"] == everyone and out["from_retention_base"] == 0


async def test_explain_and_rca_start_at_the_base_and_refuse_a_change_before_it(
        fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await _truncated(fresh_database_url, benign=False)
    full = golden_history()
    async with PostgresEventStore("eu", fresh_database_url) as store:
        kept = await store.history("golden-acct-1")
        base = await base_state(store, "golden-acct-1")
        assert base is not None and base == fold(initial_state("golden-acct-1", "eu"),
                                                 full[:BASE])
        assert await base_state(store, "nobody") is None
        ex = explain(kept, L3_CHANGE, base)
        # the strikes kept are listed; those before the base weigh through its carried risk,
        # as much as they weigh in the whole history's explanation
        whole = explain(full, L3_CHANGE)
        assert [s.strike.version for s in ex.strikes] == [s.strike.version for s in whole.strikes
                                                          if s.strike.version > BASE]
        before = sum(s.decayed_points for s in whole.strikes if s.strike.version <= BASE)
        assert sum(points for _, points in ex.base_risk) == pytest.approx(before, abs=1e-5)
        with pytest.raises(BeforeRetentionBase):
            explain(kept, 14, base)
        assert issubclass(BeforeRetentionBase, VersionGap)
        # the console's explanation reads the same
        assert await explanation(store, "golden-acct-1", L3_CHANGE) == render(ex)
        with pytest.raises(BeforeRetentionBase):
            await explanation(store, "golden-acct-1", 14)

    args = ("--region", "eu", "--database-url", fresh_database_url)
    capsys.readouterr()
    assert await run_cli("ops", "explain", "golden-acct-1", str(L3_CHANGE), *args) == 0
    out = capsys.readouterr().out
    assert f"retention    history starts at v{BASE + 1}: retention removed v1..v{BASE}" in out
    assert "carried      jailbreak" in out and "L2 -> L3" in out
    assert await run_cli("ops", "explain", "golden-acct-1", "14", *args) == 1
    assert f"retention removed v1..v{BASE}" in capsys.readouterr().err
    report = tmp_path / "rca.html"
    assert await run_cli("ops", "rca", "golden-acct-1", "--out", str(report), *args) == 0
    assert f"history starts at v{BASE + 1}" in report.read_text()


async def test_state_at_a_time_before_the_kept_history_is_a_version_gap(
        fresh_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await _truncated(fresh_database_url, benign=False)
    full = golden_history()
    async with PostgresEventStore("eu", fresh_database_url) as store:
        first_kept = full[BASE].occurred_at
        at_first = await store.state_at("golden-acct-1", at=first_kept)
        assert at_first == fold(initial_state("golden-acct-1", "eu"),
                                [e for e in full if e.occurred_at <= first_kept])
        assert await store.state_at("golden-acct-1", version=BASE) == fold(
            initial_state("golden-acct-1", "eu"), full[:BASE])
        # before the first kept event: the removed events' times are gone with them (the state
        # an empty account had was returned before)
        for at in (CUT, full[0].occurred_at - timedelta(days=1)):
            with pytest.raises(VersionGap, match=f"retention removed v1..v{BASE}"):
                await store.state_at("golden-acct-1", at=at)
        with pytest.raises(VersionGap):
            await store.state_at("golden-acct-1", version=BASE - 1)
        assert (await store.state_at("nobody", at=CUT)).version == 0  # never truncated
    capsys.readouterr()
    assert await run_cli("ops", "state-at", "golden-acct-1", "--at", CUT.isoformat(),
                         "--region", "eu", "--database-url", fresh_database_url) == 1
    assert "retention removed" in capsys.readouterr().err


async def test_the_consoles_older_pages_stop_at_the_base_and_say_what_retention_removed(
        fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await _truncated(fresh_database_url, benign=False)
    monkeypatch.setattr(pages, "PAGE", 10)
    base = fold(initial_state("golden-acct-1", "eu"), golden_history()[:BASE])
    async with PostgresEventStore("eu", fresh_database_url) as store:
        await store.append(AppendRequest("fresh-1", 0, benign_history("fresh-1", 15)))
        view = await pages.timeline(store, "golden-acct-1", PlotCache(),
                                    MarkerCache(pages.MARKER_TYPES, pages.MARKERS))
        assert (view["older"], view["retention"]) == (66, None)  # kept events older than these
        assert (await pages.older_events(store, "golden-acct-1", 66))["older"] == 56
        last = await pages.older_events(store, "golden-acct-1", 46)
        assert [r["version"] for r in last["events"]] == list(range(46, BASE, -1))
        note = last["retention"]
        assert last["older"] is None and note is not None  # no link to an empty page
        assert (note.through, note.removed_at, note.level) == (BASE, CUT + timedelta(days=30),
                                                               base.level)
        assert note.risk == tuple((r.category, r.total) for r in base.risk) and note.risk
        assert (await pages.older_events(store, "golden-acct-1", 20)) == {
            "events": [], "older": None, "retention": note}
        # a history retention never truncated pages down to v1, with nothing said
        fresh = await pages.timeline(store, "fresh-1", PlotCache(),
                                     MarkerCache(pages.MARKER_TYPES, pages.MARKERS))
        assert (fresh["older"], fresh["retention"]) == (5, None)
        assert await pages.older_events(store, "fresh-1", 5) == {
            "events": [pages.row(e) for e in reversed(benign_history("fresh-1", 5))],
            "older": None, "retention": None}
        assert (await pages.older_events(store, "nobody", 5))["older"] is None


async def test_ops_history_first_says_which_versions_retention_removed(
        fresh_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await _truncated(fresh_database_url, benign=False)
    base = fold(initial_state("golden-acct-1", "eu"), golden_history()[:BASE])
    args = ("ops", "history", "golden-acct-1", "--region", "eu",
            "--database-url", fresh_database_url)
    capsys.readouterr()
    assert await run_cli(*args) == 0
    out = capsys.readouterr().out.splitlines()
    risk = ", ".join(f"{r.category} {r.total:.3f}" for r in base.risk)
    assert out[0] == (f"history before v{BASE + 1} was removed by retention on "
                      f"{(CUT + timedelta(days=30)).date().isoformat()} (v1..v{BASE}); "
                      f"retention base at v{BASE}: L{base.level}, risk {risk}")
    assert base.level == 1 and risk
    assert out[1] == f"account golden-acct-1 (region eu): 40 events, versions {BASE + 1}..76"
    assert await run_cli(*args, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["retention"] == {
        "removed_versions": [1, BASE], "first_kept_version": BASE + 1,
        "removed_at": (CUT + timedelta(days=30)).isoformat(), "base_version": BASE,
        "base_level": 1, "base_risk": {r.category: r.total for r in base.risk}}
    assert [e["version"] for e in listed["events"]] == list(range(BASE + 1, 77))
