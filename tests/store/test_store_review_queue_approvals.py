"""The review queue and approvals: only an approval that carries out the action awaiting it
settles a review, as in the fold. The operator actions are decided by the real core (``decide``)
and appended to every backend (see ``store`` in this folder's conftest), PostgreSQL included."""

from __future__ import annotations

from datetime import timedelta

from safeguards.core.decide import decide
from safeguards.core.events import Event, OperatorActionTaken, ReviewRequested, Signal
from safeguards.core.operators import APPROVAL_WINDOW_S
from safeguards.core.policy import default_policy
from safeguards.core.ports import AppendRequest
from safeguards.core.state import AccountState, fold, initial_state

from store_events import T0, StoreUnderTest, body_for, make_event

POLICY = default_policy()


def _op(operator: str, action: str, level: int | None) -> OperatorActionTaken:
    return OperatorActionTaken(operator, action, level, None, "case 17")  # type: ignore[arg-type]


# alice asks for L5 (two people under the default policy), then what follows
SUSPEND = _op("alice", "set_level", 5)
STORIES: dict[str, list[OperatorActionTaken]] = {
    "a-own": [SUSPEND, _op("alice", "approve", 5)],
    "b-other-level": [SUSPEND, _op("bob", "approve", 4)],
    "c-rejected": [SUSPEND, _op("bob", "reject", 5)],
    "d-withdrawn-then-approved": [SUSPEND, _op("alice", "reject", 5), _op("bob", "approve", 5)],
    "e-approved": [SUSPEND, _op("alice", "approve", 5), _op("bob", "approve", 4),
                   _op("bob", "approve", 5)],
    "f-approved-by-carol": [SUSPEND, _op("carol", "approve", 5)],
}
STILL_OPEN = {"a-own", "b-other-level", "c-rejected", "d-withdrawn-then-approved", "g-lapsed"}


async def _decided(store: StoreUnderTest, account: str,
                   actions: list[OperatorActionTaken], gap: timedelta) -> tuple[
                       AccountState, list[Event]]:
    """An account with a review proposing L5 open, then ``actions`` decided one by one (``gap``
    apart) and appended as the actor would."""
    opened = (make_event(account, store.region, 1, body=body_for(1)),
              make_event(account, store.region, 2,
                         body=ReviewRequested(5, "escalate.points proposes L5",
                                              "escalate.review", 1)))
    await store.append(AppendRequest(account, 0, opened))
    state = fold(initial_state(account, store.region), opened)
    decided: list[Event] = []
    for i, action in enumerate(actions):
        at = T0 + gap * (i + 1)
        new = decide(state, Signal(f"{account}-op{i}", account, store.region, at, "c", action),
                     POLICY, at)
        await store.append(AppendRequest(account, state.version, tuple(new)))
        state = fold(state, new)
        decided += new
    return state, decided


async def test_only_an_approval_that_takes_effect_settles_a_review(
        store: StoreUnderTest) -> None:
    results = {a: await _decided(store, a, story, timedelta(minutes=1))
               for a, story in STORIES.items()}
    # lapsed: bob approves the right level a second after the request's window closed
    results["g-lapsed"] = await _decided(store, "g-lapsed", [SUSPEND, _op("bob", "approve", 5)],
                                         timedelta(seconds=APPROVAL_WINDOW_S + 1))
    # each refused approval was recorded (what the queue used to read as a decision) and
    # changed nothing: no ApprovalGranted, the level and the request as they were
    _, own = results["a-own"]
    assert [e.type for e in own] == ["ApprovalRequested", "OperatorActionTaken"]
    for account in ("a-own", "b-other-level", "g-lapsed"):
        state, _ = results[account]
        assert state.level == 0 and state.pending_approval is not None
    state, _ = results["c-rejected"]
    assert state.level == 0 and state.pending_approval is None
    for account in ("e-approved", "f-approved-by-carol"):
        state, decided = results[account]
        assert "ApprovalGranted" in [e.type for e in decided] and state.level == 5

    queued = {r.account_id: r.proposed_level for r in await store.open_reviews()}
    assert queued == dict.fromkeys(sorted(STILL_OPEN), 5)
    # the queue agrees with the fold, from the store's own folds too
    states = await store.load_many(list(results))
    assert queued == {a: s.review_level for a, s in states.items() if s.review_level}
    assert {a: s.review_level for a, (s, _) in results.items() if s.review_level} == queued
