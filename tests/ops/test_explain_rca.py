"""Explanations, RCA reports and backtests over a real (golden) history."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest

from safeguards.core.backtest import backtest
from safeguards.core.decide import decide
from safeguards.core.events import (
    EnforcementChanged,
    Event,
    RequestObserved,
    ScoreRecorded,
    Signal,
)
from safeguards.core.policy import default_policy_text, parse_policy
from safeguards.core.state import fold, initial_state
from safeguards.ops.cli import timeline_row
from safeguards.ops.explain import NotAnEnforcement, explain, render
from safeguards.ops.rca import rca_html, timeline_svg

from golden_events import GOLDEN, golden_history


def test_explain_walks_from_enforcement_back_to_scores_and_models() -> None:
    history = golden_history()
    l3 = next(e for e in history
              if isinstance(e.body, EnforcementChanged) and e.body.level == 3)
    ex = explain(history, l3.version)
    assert ex.trigger is not None and ex.trigger.type == "ScoreRecorded"
    assert ex.change.rule_id == "escalate.points"
    # Strikes before the L1 expiry still count, decayed; all link back to their scores.
    assert len(ex.strikes) == 5
    assert all(link.score is not None and link.score.type == "ScoreRecorded"
               for link in ex.strikes)
    assert sum(link.decayed_points for link in ex.strikes) == pytest.approx(
        ex.change.risk_total, abs=0.01)
    text = render(ex)
    assert "policy       default-2026.11.1" in text and "by default 2026.11.1" in text


def test_explain_after_an_operator_clear_has_no_stale_strikes() -> None:
    history = golden_history()
    clear = history[-1]
    assert isinstance(clear.body, EnforcementChanged) and clear.body.rule_id == "operator.clear"
    ex = explain(history, clear.version)
    assert ex.strikes == ()
    assert "operator oncall-1" in render(ex)


def test_explain_refuses_a_version_that_is_not_an_enforcement() -> None:
    with pytest.raises(NotAnEnforcement, match="ScoreRecorded"):
        explain(golden_history(), 2)
    with pytest.raises(NotAnEnforcement, match="missing"):
        explain(golden_history(), 10_000)


def test_rca_report_is_self_contained_html_with_a_valid_svg() -> None:
    history = golden_history()
    page = rca_html("golden-acct-1", "eu", history, datetime(2026, 11, 27, tzinfo=UTC))
    assert page.startswith("<!doctype html>") and "http" not in page.replace(
        "http://www.w3.org/2000/svg", "")
    assert page.count("<tr>") == 1 + sum(
        e.type in {"EnforcementChanged", "StrikeRecorded", "ShadowDecision",
                   "OperatorActionTaken"} for e in history)
    svg = ElementTree.fromstring(timeline_svg(history))
    assert svg.tag.endswith("svg") and len(list(svg)) > 50


def test_backtest_same_policy_changes_nothing() -> None:
    # The policy the history was decided under: replaying it must change nothing at all.
    same = parse_policy((GOLDEN / "policy-default-2026.11.1.toml").read_text())
    result = backtest(golden_history(), same)
    assert not result.differs and result.describe() == "same"
    assert result.stored.max_level == 4 and result.stored.first_l3_at is not None


def test_backtest_of_a_laxer_policy_reports_how_it_differs() -> None:
    golden_policy = (GOLDEN / "policy-default-2026.11.1.toml").read_text()
    lax = parse_policy(golden_policy.replace("threshold = 0.5", "threshold = 0.99"))
    result = backtest(golden_history(), lax)
    assert result.differs
    assert "strikes 5 -> 1" in result.describe()


def test_rca_and_the_history_timeline_show_a_prompt_link() -> None:
    """An account whose flagged prompt linked it to the prompt's history: the report names the
    prompt by its keyed hash and why, and the timeline carries the request's link key."""
    policy = parse_policy(default_policy_text())
    at = datetime(2026, 12, 8, tzinfo=UTC)
    link = "ab" * 16
    state, history = initial_state("acct-r", "eu"), list[Event]()
    for signal in (
            Signal("s1", "acct-r", "eu", at, "c1", RequestObserved(
                "req-1", "m", "proxy", 1, 1, 10, "0" * 64, False, "intervene",
                prompt_link=link)),
            Signal("s2", "acct-r", "eu", at, "c1", ScoreRecorded(
                "req-1", "prompt", "1" * 64, 10, "default", "1", (("cyber", 0.8),)))):
        events = decide(state, signal, policy, at)
        state, history = fold(state, events), history + events
    page = rca_html("acct-r", "eu", history, at)
    assert f"linked to prompt:{link}" in page and "link.prompt" in page
    assert "request req-1&#x27;s prompt was flagged" in page
    rows = [timeline_row(e) for e in history]
    assert f"prompt link {link}" in rows[0]["detail"]
    assert any(r["detail"].startswith(f"linked to prompt:{link} (prompt") for r in rows)
