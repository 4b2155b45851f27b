"""An account's state and the fold that builds it: ``evolve(state, event) -> state``.

``evolve`` applies facts; it makes no judgement (that is ``decide``'s job), needs no policy, and
refuses a version gap. Decayed quantities are stored as (total, as_of, half-life) so that any
later time can read them without the fold knowing the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from safeguards.core.errors import VersionGap
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    EnforcementChanged,
    Event,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    ShadowDecision,
    StrikeRecorded,
)

# Bump whenever ``evolve`` or AccountState changes meaning: stored snapshots made by another fold
# version are discarded and rebuilt from events, never trusted.
FOLD_VERSION = 1


@dataclass(frozen=True, slots=True)
class CategoryRisk:
    """Exponentially decayed strike points in one category, as of the last strike."""

    category: str
    total: float
    as_of: datetime
    half_life_s: float

    def at(self, now: datetime) -> float:
        elapsed = (now - self.as_of).total_seconds()
        if elapsed <= 0:
            return self.total
        return float(self.total * 0.5 ** (elapsed / self.half_life_s))


@dataclass(frozen=True, slots=True)
class AccountState:
    account_id: str
    region: str
    version: int = 0
    level: int = 0
    level_expires_at: datetime | None = None
    level_reason: str = ""
    level_rule: str = ""
    level_version: int = 0  # version of the EnforcementChanged that set the level
    level_policy_version: str | None = None
    risk: tuple[CategoryRisk, ...] = ()
    strikes: int = 0
    requests: int = 0
    scores: int = 0
    last_seen: datetime | None = None
    open_appeals: tuple[str, ...] = ()

    def risk_of(self, category: str) -> CategoryRisk | None:
        for r in self.risk:
            if r.category == category:
                return r
        return None

    def risk_total(self, now: datetime) -> float:
        return sum(r.at(now) for r in self.risk)


def initial_state(account_id: str, region: str) -> AccountState:
    return AccountState(account_id=account_id, region=region)


def evolve(state: AccountState, event: Event) -> AccountState:
    if event.version != state.version + 1:
        raise VersionGap(
            f"account {state.account_id!r} is at version {state.version}; "
            f"event {event.type} has version {event.version}"
        )
    body = event.body
    s = state
    v = event.version
    at = event.occurred_at
    # Each branch builds the new state in one constructor call: the fold is the hot path of
    # loads, replays and backtests, and dataclasses.replace costs several times more.
    if isinstance(body, RequestObserved):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests + 1, s.scores, at, s.open_appeals)
    if isinstance(body, ScoreRecorded):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores + 1, at, s.open_appeals)
    if isinstance(body, StrikeRecorded):
        updated = CategoryRisk(body.category, body.total_after, at, body.half_life_s)
        risk = (*tuple(r for r in s.risk if r.category != body.category), updated)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, risk,
                            s.strikes + 1, s.requests, s.scores, s.last_seen, s.open_appeals)
    if isinstance(body, EnforcementChanged):
        return AccountState(s.account_id, s.region, v, body.level, body.expires_at, body.reason,
                            body.rule_id, v, event.policy_version, s.risk, s.strikes, s.requests,
                            s.scores, s.last_seen, s.open_appeals)
    if isinstance(body, OperatorActionTaken):
        # Clearing an account forgives its accumulated points: otherwise the next strike would
        # put it straight back where the operator took it from.
        risk = () if body.action == "clear" else s.risk
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals)
    if isinstance(body, AppealFiled):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen,
                            (*s.open_appeals, body.appeal_id))
    if isinstance(body, AppealResolved):
        risk = () if body.outcome == "overturned" else s.risk
        appeals = tuple(a for a in s.open_appeals if a != body.appeal_id)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, risk,
                            s.strikes, s.requests, s.scores, s.last_seen, appeals)
    if isinstance(body, ShadowDecision):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals)
    raise TypeError(f"evolve has no case for {type(body).__name__}")


def fold(state: AccountState, events: list[Event] | tuple[Event, ...]) -> AccountState:
    for event in events:
        state = evolve(state, event)
    return state
