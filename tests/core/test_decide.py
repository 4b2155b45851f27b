"""decide and evolve: scenarios from the policy, and properties over random signal sequences."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policies import policy_text

from safeguards.core.decide import decide
from safeguards.core.enforcement import commands_for
from safeguards.core.errors import VersionGap
from safeguards.core.events import (
    AccountLinked,
    AppealFiled,
    AppealResolved,
    EnforcementChanged,
    Event,
    OperatorActionTaken,
    PolicyChanged,
    PolicyProposed,
    PolicyRejected,
    RequestObserved,
    ScoreRecorded,
    ShadowDecision,
    Signal,
    StrikeRecorded,
)
from safeguards.core.operators import APPROVAL_WINDOW_S
from safeguards.core.policy import Policy, default_policy, default_policy_text, parse_policy
from safeguards.core.state import RECENT_CONTENT, AccountState, evolve, fold, initial_state

from strategies import observations, score_signal

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = default_policy()


def run(state: AccountState, signal: Signal, at: datetime, policy: Policy = POLICY
        ) -> tuple[AccountState, list[Event]]:
    events = decide(state, signal, policy, at)
    return fold(state, events), events


def levels(events: list[Event]) -> list[int]:
    return [e.body.level for e in events if isinstance(e.body, EnforcementChanged)]


def test_benign_scores_record_observations_only() -> None:
    s, events = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("cyber", 0.2),)), T0)
    assert [e.type for e in events] == ["ScoreRecorded"]
    assert s.version == 1 and s.level == 0 and s.scores == 1
    assert events[0].policy_version is None  # an observation is not a policy decision


def org_run(org: AccountState, i: int, score: float, policy: Policy = POLICY
            ) -> tuple[AccountState, list[int]]:
    """Fresh account ``i`` sends one jailbreak-scored request of its own content; its score goes
    to its own history and to the organisation's."""
    at = T0 + timedelta(minutes=i)
    own = score_signal(i, f"fresh-{i}", at, (("jailbreak", score),))
    account, events = run(initial_state(f"fresh-{i}", "eu"), own, at, policy)
    assert account.level <= 1  # one request is never more than a warning on its own
    assert isinstance(own.observation, ScoreRecorded)
    member = replace(own, account_id="org:acme", signal_id=f"org-{i}",
                     observation=replace(own.observation, member_account=f"fresh-{i}"))
    org, events = run(org, member, at, policy)
    return org, levels(events)


def test_an_organisation_adds_up_its_accounts_high_confidence_strikes_once_each() -> None:
    """Each fresh account strikes once and is at most warned on its own; the organisation, which
    sees every account's scores, climbs on those at the refuse threshold. The same content from
    several accounts (a shared system prompt, a replayed attack) is one piece of evidence."""
    org, seen = initial_state("org:acme", "eu"), []
    for i in range(4):
        org, changed = org_run(org, i, 0.95)
        seen += changed
    assert seen[:1] == [1] and org.level >= 2 and org.strikes == 4
    at = T0 + timedelta(minutes=5)
    replayed = score_signal(3, "fresh-9", at, (("jailbreak", 0.95),))  # fresh-3's content again
    org, events = run(org, replace(replayed, account_id="org:acme", signal_id="org-9"), at)
    assert [e.type for e in events] == ["ScoreRecorded"] and org.strikes == 4


def test_borderline_scores_stay_with_the_account_unless_the_policy_counts_them() -> None:
    """Borderline scores (where false positives sit) do not add up across an organisation's
    users by default; ``escalation.aggregate_evidence = "threshold"`` counts every strike."""
    org = initial_state("org:acme", "eu")
    for i in range(6):
        org, changed = org_run(org, i, 0.6)
        assert changed == []
    assert org.strikes == 0 and org.scores == 6
    counting = replace(POLICY, aggregate_evidence="threshold")
    org, seen = initial_state("org:acme", "eu"), []
    for i in range(4):
        org, changed = org_run(org, i, 0.6, counting)
        seen += changed
    assert seen == [1, 2] and org.strikes == 4


def test_the_first_request_naming_an_aggregate_links_the_account_once() -> None:
    def request(i: int, organization: str | None, key: str | None) -> Signal:
        return Signal(f"r{i}", "a", "eu", T0, "c", RequestObserved(
            f"req-{i}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow",
            organization_id=organization, api_key_fingerprint=key))

    s, events = run(initial_state("a", "eu"), request(1, "acme", "f" * 32), T0)
    linked = [e.body for e in events if isinstance(e.body, AccountLinked)]
    assert [(b.link, b.aggregate, b.rule_id) for b in linked] == [
        ("organization", "org:acme", "link.identity"), ("api_key", "key:" + "f" * 32,
                                                         "link.identity")]
    assert s.links == ("org:acme", "key:" + "f" * 32)
    s, events = run(s, request(2, "acme", "f" * 32), T0)
    assert [e.type for e in events] == ["RequestObserved"]  # already linked
    s, events = run(s, request(3, None, "e" * 32), T0)
    assert [e.type for e in events] == ["RequestObserved", "AccountLinked"]
    assert len(s.links) == 3


def test_repeated_jailbreaks_climb_the_ladder() -> None:
    s = initial_state("a", "eu")
    seen: list[int] = []
    for i in range(4):
        s, events = run(s, score_signal(i, "a", T0 + timedelta(minutes=i),
                                        (("jailbreak", 0.95),)), T0 + timedelta(minutes=i))
        seen += levels(events)
    assert seen == [1, 2, 3]
    assert s.level == 3 and s.strikes == 4 and s.level_rule == "escalate.points"


def test_the_same_content_scored_again_strikes_once() -> None:
    """Escalation needs distinct requests: a retried or replayed prompt (same content hash) is
    recorded each time but is one piece of evidence."""
    s = initial_state("a", "eu")
    for i in range(4):
        signal = score_signal(i, "a", T0 + timedelta(minutes=i), (("jailbreak", 0.95),))
        assert isinstance(signal.observation, ScoreRecorded)
        same = replace(signal.observation, content_sha256="ab" * 32)
        s, events = run(s, replace(signal, observation=same), T0 + timedelta(minutes=i))
        assert events[0].type == "ScoreRecorded"
    assert s.scores == 4 and s.strikes == 1 and s.level == 1
    assert s.recent_content == ("ab" * 32,)


def test_remembered_content_is_bounded() -> None:
    s = initial_state("a", "eu")
    for i in range(RECENT_CONTENT + 10):
        s, _ = run(s, score_signal(i, "a", T0, (("cyber", 0.1),)), T0)
    assert len(s.recent_content) == RECENT_CONTENT
    assert s.recent_content[-1] == f"{RECENT_CONTENT + 9:064x}"


def test_a_severe_category_jumps_rungs() -> None:
    _s, events = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("weapons", 0.97),)), T0)
    assert levels(events) == [3]
    change = events[-1]
    assert isinstance(change.body, EnforcementChanged)
    assert change.body.rule_id == "escalate.severe"
    assert change.policy_version == POLICY.version
    assert change.body.expires_at == T0 + timedelta(seconds=POLICY.ladder[3].duration_s)
    (cmd,) = commands_for(events, POLICY)
    assert cmd.level == 3 and "throttle" in cmd.interventions and cmd.version == change.version


def test_levels_expire_to_what_decayed_points_justify() -> None:
    s, _ = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("weapons", 0.97),)), T0)
    later = T0 + timedelta(days=30)
    s, events = run(s, Signal("tick-1", "a", "eu", later, "c"), later)
    assert [e.type for e in events] == ["EnforcementChanged"]
    assert levels(events) == [0] and s.level == 0
    assert isinstance(events[0].body, EnforcementChanged)
    assert events[0].body.rule_id == "expire.level"


def test_operator_set_and_clear() -> None:
    s, _ = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("cyber", 0.7),)), T0)
    op = OperatorActionTaken("alice", "set_level", 3, None, "case 17")
    s, events = run(s, Signal("op1", "a", "eu", T0, "c", op), T0)
    assert levels(events) == [3]
    clear = OperatorActionTaken("alice", "clear", None, None, "reviewed")
    s, events = run(s, Signal("op2", "a", "eu", T0, "c", clear), T0)
    assert levels(events) == [0] and s.risk == ()


def _act(s: AccountState, signal_id: str, action: OperatorActionTaken,
         at: datetime = T0) -> tuple[AccountState, list[Event]]:
    return run(s, Signal(signal_id, "a", "eu", at, "c", action), at)


def test_terminating_takes_a_second_operator() -> None:
    s, events = _act(initial_state("a", "eu"), "op1",
                     OperatorActionTaken("alice", "set_level", 5, None, "case 17"))
    assert [e.type for e in events] == ["ApprovalRequested"] and s.level == 0
    assert s.pending_approval is not None and s.pending_approval.operator == "alice"
    # the same operator cannot approve their own request, nor anyone approve another target
    s, events = _act(s, "op2", OperatorActionTaken("alice", "approve", 5, None, "me again"))
    assert levels(events) == [] and s.level == 0
    s, events = _act(s, "op3", OperatorActionTaken("bob", "approve", 4, None, "not that"))
    assert levels(events) == [] and s.level == 0
    s, events = _act(s, "op4", OperatorActionTaken("bob", "approve", 5, None, "seen the case"))
    assert levels(events) == [5] and s.level == 5 and s.pending_approval is None
    changed = events[-1].body
    assert isinstance(changed, EnforcementChanged) and changed.rule_id == "operator.set_level"
    assert "approved by bob" in changed.reason
    # an approval with nothing pending does nothing
    s, events = _act(s, "op5", OperatorActionTaken("carol", "approve", 5, None, "late"))
    assert levels(events) == []


def test_clearing_a_suspended_account_takes_a_second_operator() -> None:
    s, _ = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("cyber", 0.7),)), T0)
    s, _ = _act(s, "op1", OperatorActionTaken("alice", "set_level", 4, None, "case 17"))
    assert s.level == 4  # suspending is one person's call
    s, events = _act(s, "op2", OperatorActionTaken("alice", "clear", None, None, "reviewed"))
    assert [e.type for e in events] == ["ApprovalRequested"] and s.level == 4
    assert s.risk != ()  # nothing forgiven yet
    lower = OperatorActionTaken("bob", "set_level", 2, None, "lower instead")
    s, events = _act(s, "op3", lower)  # lowering from L4 takes two as well
    assert [e.type for e in events] == ["ApprovalRequested"] and s.level == 4
    assert s.pending_approval is not None and s.pending_approval.operator == "bob"
    s, events = _act(s, "op4", OperatorActionTaken("alice", "approve", 2, None, "agreed"))
    assert levels(events) == [2] and s.pending_approval is None


def test_an_approval_lapses_after_its_window() -> None:
    s, _ = _act(initial_state("a", "eu"), "op1",
                OperatorActionTaken("alice", "set_level", 5, None, "case 17"))
    late = T0 + timedelta(seconds=APPROVAL_WINDOW_S + 1)
    s, events = _act(s, "op2", OperatorActionTaken("bob", "approve", 5, None, "too late"), late)
    assert levels(events) == [] and s.level == 0


def test_appeal_overturned_restores_and_forgives() -> None:
    s, _ = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("weapons", 0.97),)), T0)
    s, _ = run(s, Signal("ap1", "a", "eu", T0, "c", AppealFiled("ap-1", "a", "research")), T0)
    assert s.open_appeals == ("ap-1",)
    outcome = AppealResolved("ap-1", "bob", "overturned", 0, "false positive")
    s, events = run(s, Signal("ap2", "a", "eu", T0, "c", outcome), T0)
    assert levels(events) == [0] and s.open_appeals == () and s.risk == ()


def test_shadowed_rule_records_without_acting() -> None:
    text = default_policy_text().replace(
        '[rules."escalate.severe"]\nshadow = false', '[rules."escalate.severe"]\nshadow = true')
    shadow_policy = parse_policy(text)
    events = decide(initial_state("a", "eu"), score_signal(1, "a", T0, (("weapons", 0.97),)),
                    shadow_policy, T0)
    assert [e.type for e in events] == ["ScoreRecorded", "StrikeRecorded", "ShadowDecision"]
    assert isinstance(events[-1].body, ShadowDecision) and events[-1].body.would_level == 3


def test_a_slow_drip_of_borderline_scores_adds_up() -> None:
    s = initial_state("a", "eu")
    seen: list[int] = []
    rules: set[str] = set()
    for i in range(12):
        at = T0 + timedelta(minutes=10 * i)
        s, events = run(s, score_signal(i, "a", at, (("weapons", 0.5),)), at)
        seen += levels(events)
        rules |= {e.body.rule_id for e in events if isinstance(e.body, StrikeRecorded)}
    assert rules == {"strike.accumulate"}  # 0.5 never crosses the 0.6 threshold
    assert seen[:3] == [1, 2, 3]


def test_throttled_requests_count_as_rate_abuse() -> None:
    s = initial_state("a", "eu")
    seen: list[int] = []
    for i in range(40):
        at = T0 + timedelta(seconds=i)
        obs = RequestObserved(f"r{i}", "m", "proxy", 1, 0, 10, "0" * 64, False, "throttle")
        s, events = run(s, Signal(f"t{i}", "a", "eu", at, "c", obs), at)
        seen += levels(events)
    assert seen == [1, 2, 3]
    assert s.risk_of("rate_abuse") is not None


def test_evolve_refuses_a_gap() -> None:
    _, events = run(initial_state("a", "eu"), score_signal(1, "a", T0, (("weapons", 0.97),)), T0)
    with pytest.raises(VersionGap):
        evolve(initial_state("a", "eu"), events[1])


def test_decide_is_deterministic() -> None:
    sig = score_signal(1, "a", T0, (("jailbreak", 0.99), ("cyber", 0.9)))
    assert decide(initial_state("a", "eu"), sig, POLICY, T0) == decide(
        initial_state("a", "eu"), sig, POLICY, T0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.none() | observations, st.integers(0, 10 * 86400)), max_size=25))
def test_any_signal_sequence_keeps_the_invariants(steps: list[tuple[object, int]]) -> None:
    s = initial_state("acct", "eu")
    at = T0
    all_events: list[Event] = []
    for i, (obs, gap) in enumerate(steps):
        at += timedelta(seconds=gap)
        sig = Signal(f"s{i}", "acct", "eu", at, "c", obs)  # type: ignore[arg-type]
        events = decide(s, sig, POLICY, at)
        for e in events:
            assert e.account_id == "acct" and e.region == "eu" and e.occurred_at == at
            decided = not e.body.OBSERVATION
            assert (e.policy_version == POLICY.version) if decided else e.policy_version is None
            # Past the automatic limit, only people or severe evidence raise the level.
            if isinstance(e.body, EnforcementChanged) and e.body.level > e.body.previous_level \
                    and e.body.level > POLICY.automatic_max_level:
                assert e.body.rule_id in {"operator.set_level", "appeal.overturned",
                                          "escalate.severe_evidence"}
        s = fold(s, events)
        all_events += events
        assert 0 <= s.level <= 5
        assert all(r.total >= 0 for r in s.risk)
    assert [e.version for e in all_events] == list(range(1, len(all_events) + 1))
    assert len({e.event_id for e in all_events}) == len(all_events)
    assert fold(initial_state("acct", "eu"), all_events) == s


def test_a_switched_off_category_strikes_nothing_and_shadow_mode_only_records() -> None:
    off = parse_policy(policy_text(off="jailbreak"))
    signal = score_signal(1, "a", T0, (("jailbreak", 0.99),))
    events = decide(initial_state("a", "eu"), signal, off, T0)
    assert [e.type for e in events] == ["ScoreRecorded"]
    shadow = parse_policy(policy_text("shadow"))
    s = initial_state("a", "eu")
    for i in range(4):
        at = T0 + timedelta(minutes=i)
        events = decide(s, score_signal(i, "a", at, (("jailbreak", 0.95),)), shadow, at)
        s = fold(s, events)
        assert not any(isinstance(e.body, StrikeRecorded | EnforcementChanged) for e in events)
    assert s.level == 0 and s.strikes == 0


def test_a_policy_proposed_in_the_regions_policy_history_is_validated_then_in_force() -> None:
    text = policy_text(version="candidate-")
    history = initial_state("policy:eu", "eu")
    proposal = Signal("p1", "policy:eu", "eu", T0, "c",
                      PolicyProposed("alice", "switch cyber off", text))
    history, events = run(history, proposal, T0)
    [changed] = [e.body for e in events if isinstance(e.body, PolicyChanged)]
    assert changed.policy_version.startswith("candidate-") and changed.operator == "alice"
    assert parse_policy(changed.document).version == changed.policy_version
    broken = Signal("p2", "policy:eu", "eu", T0, "c",
                    PolicyProposed("alice", "oops", text.replace("threshold = 0.5", "x = 1", 1)))
    history, events = run(history, broken, T0)
    [rejected] = [e.body for e in events if isinstance(e.body, PolicyRejected)]
    assert "categories.jailbreak.threshold: missing" in rejected.problems
    # an account's history is not where policies change
    elsewhere = Signal("p3", "acct", "eu", T0, "c", PolicyProposed("mallory", "x", text))
    _, events = run(initial_state("acct", "eu"), elsewhere, T0)
    assert [e.type for e in events] == ["PolicyProposed", "PolicyRejected"]
