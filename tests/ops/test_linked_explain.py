"""Explain, the timeline, the RCA report and backtests show links: the aggregates an account
was linked to, and the change a linked aggregate's enforcement made (rule ``link.enforced``)."""

from __future__ import annotations

from datetime import UTC, datetime

from linked_region import ORG, Region, request, set_level
from policies import policy_text

from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.backtest import backtest
from safeguards.core.events import EnforcementChanged
from safeguards.core.policy import default_policy, parse_policy
from safeguards.core.ports import AppendRequest
from safeguards.ops.backtest import backtest_region
from safeguards.ops.cli import timeline_row
from safeguards.ops.explain import explain, render
from safeguards.ops.rca import rca_html

UNLINKED = parse_policy(policy_text(version="unlinked-").replace("linked_start_level = 1",
                                                                 "linked_start_level = 0"))


def linked_region() -> Region:
    """``a`` linked to the organisation before it was enforced; ``b`` never linked."""
    r = Region()
    r.send(request("a", 1), request("b", 1, org=None))
    r.send(set_level(ORG, 2))
    assert r.level("a") == 1 and r.level("b") == 0
    return r


def test_explain_names_the_enforced_aggregate_and_the_accounts_links() -> None:
    history = linked_region().histories["a"]
    change = next(e for e in history if isinstance(e.body, EnforcementChanged))
    ex = explain(history, change.version)
    assert ex.linked_aggregate is not None and ex.linked_aggregate.aggregate == ORG
    assert [e.type for e in ex.links] == ["AccountLinked"]
    text = render(ex)
    assert "enforcement  L0 -> L1" in text and "rule         link.enforced" in text
    assert f"linked       {ORG} stands at L2 (its rule operator.set_level, its v3)" in text
    assert f"v2 {history[1].occurred_at.isoformat()} {ORG} (organization, rule link.identity, " \
           "request r-a-1)" in text
    assert "no strikes: a linked aggregate's enforcement set this level" in text


def test_the_timeline_and_the_rca_report_show_the_link_and_its_enforcement() -> None:
    r = linked_region()
    rows = [timeline_row(e) for e in r.histories["a"]]
    assert [row["type"] for row in rows] == ["RequestObserved", "AccountLinked",
                                             "AggregateEnforced", "EnforcementChanged"]
    assert rows[2]["detail"] == f"linked {ORG} stands at L2 (operator.set_level, its v3)"
    assert rows[3]["rule"] == "link.enforced" and rows[3]["level"] == "L0->L1"
    assert timeline_row(r.histories[ORG][0])["detail"] == (
        "member a (organization, request r-a-1)")
    page = rca_html("a", "eu", r.histories["a"], datetime(2026, 12, 9, tzinfo=UTC))
    assert f"linked to {ORG}" in page and f"linked {ORG} at L2" in page
    assert "link.enforced" in page and "L0 &rarr; L1" in page
    org_page = rca_html(ORG, "eu", r.histories[ORG], datetime(2026, 12, 9, tzinfo=UTC))
    assert "member a" in org_page


def test_a_backtest_shows_what_links_did_and_would_do() -> None:
    history = linked_region().histories["a"]
    same = backtest(history, default_policy())
    assert not same.differs
    assert same.candidate.links == (ORG,) and same.candidate.linked_starts == ((1, ORG),)
    assert same.links_line() == f"linked to {ORG}; linked starts L1 from {ORG}"
    off = backtest(history, UNLINKED)
    assert off.differs
    assert f"linked starts L1 from {ORG} -> none" in off.describe()
    assert "max level L1 -> L0" in off.describe()


async def test_the_region_backtest_reports_links() -> None:
    r = linked_region()
    store = InMemoryEventStore("eu")
    for account in ("a", "b", ORG):
        await store.append(AppendRequest(account, 0, tuple(r.histories[account])))
    same = await backtest_region(store, default_policy())
    assert same.differing == [] and (same.linked_accounts, same.linked_starts) == (1, 1)
    assert "links: 1 account(s) linked to an organisation, API key or prompt; 1 started at " \
           "the linked level by an enforced one (rule link.enforced)" in same.render()
    off = await backtest_region(store, UNLINKED)
    assert [d.account_id for d in off.differing] == ["a"]
    text = off.render()
    assert f"  a: max level L1 -> L0; final level L1 -> L0; enforcement changes 1 -> 0; " \
           "path differs from v3: L1 by link.enforced -> no further change; " \
           f"linked starts L1 from {ORG} -> none" in text
    assert f"    linked to {ORG}; linked starts none" in text


def test_a_second_episode_is_explained_by_the_aggregates_new_enforcement() -> None:
    """Cleared and enforced again, the organisation opens a second episode: explain names its new
    enforcement (rule link.enforced for the member), and its own timeline and RCA show both
    episodes."""
    r = linked_region()
    r.send(set_level(ORG, 0, 1), set_level("a", 0, 2))
    r.send(set_level(ORG, 3, 3))
    history = r.histories["a"]
    linked = [e for e in history
              if isinstance(e.body, EnforcementChanged) and e.body.rule_id == "link.enforced"]
    assert len(linked) == 2
    text = render(explain(history, linked[-1].version))
    assert "enforcement  L0 -> L1" in text and "rule         link.enforced" in text
    assert f"linked       {ORG} stands at L3 (its rule operator.set_level, its v8)" in text
    rows = [timeline_row(e) for e in r.histories[ORG] if e.type == "LinkedEpisode"]
    assert [row["detail"] for row in rows] == [
        "linked enforcement opened at L2 (trigger L2), its newest 256 member(s) told (from v3)",
        "linked enforcement opened at L3 (trigger L2), its newest 256 member(s) told (from v8)"]
    page = rca_html(ORG, "eu", r.histories[ORG], datetime(2026, 12, 9, tzinfo=UTC))
    assert "linked enforcement opened at L2" in page and "linked enforcement opened at L3" in page
