"""People before severe sanctions: automatic escalation stops at the policy's limit and asks for a
review, unless a severe category has high-confidence evidence from enough distinct requests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from safeguards.core.decide import decide
from safeguards.core.events import (
    EnforcementChanged,
    Event,
    Observation,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    ShadowDecision,
    Signal,
)
from safeguards.core.policy import Policy, default_policy, default_policy_text, parse_policy
from safeguards.core.state import STRONGEST_KEPT, AccountState, fold, initial_state

from strategies import score_signal

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = default_policy()


def run(state: AccountState, signal: Signal, policy: Policy = POLICY) -> tuple[AccountState,
                                                                              list[Event]]:
    events = decide(state, signal, policy, signal.occurred_at)
    return fold(state, events), events


def scores(state: AccountState, first: int, count: int, category: str, score: float,
           policy: Policy = POLICY) -> tuple[AccountState, list[Event]]:
    """``count`` distinct requests, one minute apart, each scoring ``score`` in ``category``."""
    seen: list[Event] = []
    for i in range(first, first + count):
        state, events = run(state, score_signal(i, "a", T0 + timedelta(minutes=i),
                                                ((category, score),)), policy)
        seen += events
    return state, seen


def operator(state: AccountState, n: int, obs: Observation) -> tuple[AccountState, list[Event]]:
    return run(state, Signal(f"op-{n}", "a", "eu", T0 + timedelta(hours=1, minutes=n), "c", obs))


def changes(events: list[Event]) -> list[EnforcementChanged]:
    return [e.body for e in events if isinstance(e.body, EnforcementChanged)]


def reviews(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e.body, ReviewRequested)]


def test_the_default_policy_stops_automation_at_l3() -> None:
    assert POLICY.automatic_max_level == 3
    weapons = POLICY.category("weapons")
    assert weapons is not None and weapons.severe and weapons.severe_evidence == 3


def test_points_past_the_limit_hold_at_l3_and_request_one_review() -> None:
    s, events = scores(initial_state("a", "eu"), 0, 10, "jailbreak", 0.95)
    assert [c.level for c in changes(events)] == [1, 2, 3]
    assert s.level == 3 and s.level_rule == "escalate.points"
    assert s.risk_total(T0 + timedelta(minutes=10)) > POLICY.ladder[4].points
    (review,) = reviews(events)  # once: not again while the review is open
    assert isinstance(review.body, ReviewRequested)
    assert review.body.proposed_level == 4 and review.body.rule_id == "escalate.review"
    assert "escalate.points proposes L4" in review.body.reason
    assert "stops at L3" in review.body.reason
    assert review.policy_version == POLICY.version
    assert s.review_level == 4


def test_a_jump_past_the_limit_waits_at_the_limit() -> None:
    text = default_policy_text().replace("jump_to = 3", "jump_to = 4")
    policy = parse_policy(text)
    s, events = scores(initial_state("a", "eu"), 0, 1, "weapons", 0.97, policy)
    (change,) = changes(events)
    assert change.level == 3 and change.rule_id == "escalate.severe"
    assert "L4 awaits review" in change.reason
    (review,) = reviews(events)
    assert isinstance(review.body, ReviewRequested) and review.body.proposed_level == 4
    assert s.level == 3 and s.review_level == 4


def test_severe_evidence_from_three_distinct_requests_suspends_automatically() -> None:
    s, events = scores(initial_state("a", "eu"), 0, 3, "weapons", 0.97)
    assert [c.level for c in changes(events)] == [3, 4]
    l4 = changes(events)[-1]
    assert l4.rule_id == "escalate.severe_evidence"
    assert "3 distinct requests scored >= 0.9 in severe category weapons" in l4.reason
    assert l4.expires_at is None  # L4 lasts until an operator acts
    assert reviews(events) == [] and s.level == 4 and s.review_level == 0


def test_one_request_scored_twice_is_one_piece_of_evidence() -> None:
    """A prompt and its completion are two strikes but one request: two requests, however many
    strikes, are not the three the policy asks for."""
    s = initial_state("a", "eu")
    seen: list[Event] = []
    for i in range(4):
        signal = score_signal(i, "a", T0 + timedelta(minutes=i), (("weapons", 0.97),))
        assert isinstance(signal.observation, ScoreRecorded)
        obs = replace(signal.observation, request_id=f"req-{i // 2}",
                      content_kind="completion" if i % 2 else "prompt")
        s, events = run(s, replace(signal, observation=obs))
        seen += events
    assert s.strikes == 4 and s.evidence("weapons", 0.9) == 2
    assert s.level == 3 and [c.level for c in changes(seen)] == [3]
    (review,) = reviews(seen)
    assert isinstance(review.body, ReviewRequested) and review.body.proposed_level == 4


def test_evidence_below_the_severe_threshold_does_not_count() -> None:
    s, events = scores(initial_state("a", "eu"), 0, 6, "weapons", 0.85)
    assert s.evidence("weapons", 0.9) == 0
    assert max(c.level for c in changes(events)) == 3 and len(reviews(events)) == 1


def test_evidence_keeps_the_strongest_distinct_requests_per_category() -> None:
    s = initial_state("a", "eu")
    s, _ = scores(s, 0, 3, "weapons", 0.97)
    s, _ = scores(s, 3, 2 * STRONGEST_KEPT, "weapons", 0.65)
    assert len([e for e in s.strongest if e[0] == "weapons"]) == STRONGEST_KEPT
    assert s.evidence("weapons", 0.9) == 3  # weaker strikes never push out stronger ones


def test_an_operator_decides_the_review() -> None:
    s, _ = scores(initial_state("a", "eu"), 0, 6, "jailbreak", 0.95)
    assert s.review_level == 4
    s, events = operator(s, 1, ReviewClaimed("alice", "taking it"))
    assert [e.type for e in events] == ["ReviewClaimed"] and s.review_level == 4
    s, events = operator(s, 2, OperatorActionTaken("alice", "set_level", 4, None, "case 17"))
    (change,) = changes(events)
    assert change.level == 4 and change.rule_id == "operator.set_level"
    assert change.reason == "operator alice: case 17"
    assert s.level == 4 and s.review_level == 0


def test_a_review_decided_at_l3_reopens_on_new_evidence() -> None:
    s, _ = scores(initial_state("a", "eu"), 0, 6, "jailbreak", 0.95)
    s, _ = operator(s, 1, OperatorActionTaken("bob", "set_level", 3, None, "keep throttled"))
    assert s.review_level == 0
    s, events = scores(s, 100, 1, "jailbreak", 0.96)
    assert len(reviews(events)) == 1 and s.level == 3


def test_an_operator_note_leaves_the_review_open_and_clear_closes_it() -> None:
    s, _ = scores(initial_state("a", "eu"), 0, 6, "jailbreak", 0.95)
    s, _ = operator(s, 1, OperatorActionTaken("bob", "note", None, None, "looked"))
    assert s.review_level == 4
    s, _ = operator(s, 2, OperatorActionTaken("bob", "clear", None, None, "benign research"))
    assert s.review_level == 0 and s.level == 0 and s.strongest == () and s.risk == ()


def test_l5_always_takes_an_operator() -> None:
    text = default_policy_text().replace("points = 1000000.0", "points = 7.0")
    policy = parse_policy(text)
    s, events = scores(initial_state("a", "eu"), 0, 6, "weapons", 0.97, policy)
    assert max(c.level for c in changes(events)) == 4
    (review,) = reviews(events)
    assert isinstance(review.body, ReviewRequested) and review.body.proposed_level == 5
    assert s.level == 4 and s.review_level == 5


def test_a_policy_may_allow_automatic_l4() -> None:
    text = default_policy_text().replace("automatic_max_level = 3", "automatic_max_level = 4")
    policy = parse_policy(text)
    s, events = scores(initial_state("a", "eu"), 0, 6, "jailbreak", 0.95, policy)
    assert changes(events)[-1].level == 4 and changes(events)[-1].rule_id == "escalate.points"
    assert reviews(events) == [] and s.level == 4


def test_shadowed_review_rule_records_without_queueing() -> None:
    text = default_policy_text().replace('[rules."escalate.review"]\nshadow = false',
                                         '[rules."escalate.review"]\nshadow = true')
    policy = parse_policy(text)
    assert policy.is_shadow("escalate.review")
    s, events = scores(initial_state("a", "eu"), 0, 6, "jailbreak", 0.95, policy)
    assert reviews(events) == [] and s.review_level == 0 and s.level == 3
    shadows = [e.body for e in events if isinstance(e.body, ShadowDecision)]
    assert shadows and all(b.rule_id == "escalate.review" and b.would_level == 4
                           for b in shadows)


def test_shadowed_severe_evidence_holds_at_the_limit_and_asks_for_review() -> None:
    text = default_policy_text().replace('[rules."escalate.severe_evidence"]\nshadow = false',
                                         '[rules."escalate.severe_evidence"]\nshadow = true')
    policy = parse_policy(text)
    s, events = scores(initial_state("a", "eu"), 0, 3, "weapons", 0.97, policy)
    assert s.level == 3 and s.review_level == 4
    (shadow,) = [e.body for e in events if isinstance(e.body, ShadowDecision)]
    assert shadow.rule_id == "escalate.severe_evidence" and shadow.would_level == 4


def test_a_shadowed_escalation_rule_neither_acts_nor_queues() -> None:
    text = default_policy_text().replace('[rules."escalate.points"]\nshadow = false',
                                         '[rules."escalate.points"]\nshadow = true')
    policy = parse_policy(text)
    s, events = scores(initial_state("a", "eu"), 0, 10, "jailbreak", 0.95, policy)
    assert changes(events) == [] and reviews(events) == [] and s.review_level == 0
    assert {b.would_level for b in (e.body for e in events) if isinstance(b, ShadowDecision)} \
        >= {1, 2, 3, 4}
