"""Appeals, rejections and the two-person rule: overturning an appeal lowers the level at once
where one operator's override to that level would, and otherwise waits for a second admin's
approval like the override itself (an appeal is no way around the rule); a rejection drops the
action awaiting approval and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from safeguards.core.decide import decide
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    Observation,
    OperatorActionTaken,
    Signal,
)
from safeguards.core.operators import role_problem
from safeguards.core.policy import default_policy
from safeguards.core.state import AccountState, fold, initial_state

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = default_policy()


def _run(s: AccountState, signal_id: str, obs: Observation) -> tuple[AccountState, list[Event]]:
    events = decide(s, Signal(signal_id, "a", "eu", T0, "c", obs), POLICY, T0)
    return fold(s, events), events


def _at(level: int) -> AccountState:
    s, _ = _run(initial_state("a", "eu"), "set",
                OperatorActionTaken("alice", "set_level", level, None, "case 5"))
    if level >= 5:  # a second admin carries out the termination
        s, _ = _run(s, "approve", OperatorActionTaken("bob", "approve", level, None, "agreed"))
    assert s.level == level
    s, _ = _run(s, "filed", AppealFiled("ap-1", "csp-support", "a test suite"))
    return s


def test_overturning_below_the_two_person_threshold_lowers_at_once() -> None:
    s, events = _run(_at(3), "resolved",
                     AppealResolved("ap-1", "bob", "overturned", 0, "false positive"))
    changes = [e.body for e in events if isinstance(e.body, EnforcementChanged)]
    assert [(c.level, c.rule_id) for c in changes] == [(0, "appeal.overturned")]
    assert s.level == 0 and s.open_appeals == () and s.pending_approval is None


def test_overturning_a_suspension_waits_for_a_second_admin() -> None:
    for level in (4, 5):
        s, events = _run(_at(level), "resolved",
                         AppealResolved("ap-1", "bob", "overturned", 1, "false positive"))
        assert [e.type for e in events] == ["AppealResolved", "ApprovalRequested"]
        request = events[-1].body
        assert isinstance(request, ApprovalRequested)
        assert (request.operator, request.action, request.level) == ("bob", "set_level", 1)
        assert "appeal ap-1 overturned: false positive" in request.reason
        assert s.level == level and s.open_appeals == () and s.risk == ()
        # the overturning admin cannot carry it out alone; another admin can
        s, events = _run(s, "self", OperatorActionTaken("bob", "approve", 1, None, "me"))
        assert s.level == level and s.pending_approval is not None
        s, events = _run(s, "other", OperatorActionTaken("carol", "approve", 1, None, "read it"))
        changes = [e.body for e in events if isinstance(e.body, EnforcementChanged)]
        assert [c.level for c in changes] == [1] and s.pending_approval is None
        assert "approved by carol" in changes[0].reason


def test_upholding_changes_no_level_whatever_it_is() -> None:
    s, events = _run(_at(5), "resolved",
                     AppealResolved("ap-1", "bob", "upheld", 0, "policy applies"))
    assert [e.type for e in events] == ["AppealResolved"]
    assert s.level == 5 and s.open_appeals == ()


def test_a_rejection_drops_the_request_it_names_and_nothing_else() -> None:
    s, _ = _run(initial_state("a", "eu"), "ask",
                OperatorActionTaken("alice", "set_level", 5, None, "case 17"))
    other = OperatorActionTaken("bob", "reject", 4, None, "which one?")
    s, events = _run(s, "wrong", other)
    assert [e.type for e in events] == ["OperatorActionTaken"]
    assert s.pending_approval is not None  # another level: not the request it names
    rejection = OperatorActionTaken("alice", "reject", 5, None, "withdrawn")
    assert role_problem("analyst", rejection) is not None and role_problem("admin",
                                                                          rejection) is None
    s, events = _run(s, "withdraw", rejection)  # its proposer may withdraw it
    assert [e.type for e in events] == ["OperatorActionTaken"]
    assert s.pending_approval is None and s.level == 0
    s, events = _run(s, "late", OperatorActionTaken("bob", "approve", 5, None, "agreed"))
    assert not [e for e in events if isinstance(e.body, EnforcementChanged)] and s.level == 0
