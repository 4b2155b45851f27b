"""Backtests: what a candidate policy would have done with an account's recorded observations.

Observations (requests seen, scores, operator actions, appeals) are facts no policy changes; the
decisions (strikes, enforcement) are what a policy made of them. A backtest replays the facts in
their recorded order, at their recorded times, through ``decide`` with the candidate policy and
compares the enforcement trajectory with the one that was stored. Pure, like the rest of core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from safeguards.core.decide import decide
from safeguards.core.events import EnforcementChanged, Event, Signal
from safeguards.core.policy import Policy
from safeguards.core.state import AccountState, evolve, initial_state


@dataclass(frozen=True, slots=True)
class Trajectory:
    """The enforcement an account went through: what operators and red teams compare."""

    changes: tuple[tuple[datetime, int, str], ...]  # (when, level, rule)
    max_level: int
    final_level: int
    first_l3_at: datetime | None
    strikes: int

    @staticmethod
    def of(events: Iterable[Event]) -> Trajectory:
        changes: list[tuple[datetime, int, str]] = []
        max_level = final = strikes = 0
        first_l3: datetime | None = None
        for e in events:
            body = e.body
            if isinstance(body, EnforcementChanged):
                changes.append((e.occurred_at, body.level, body.rule_id))
                final = body.level
                max_level = max(max_level, body.level)
                if body.level >= 3 and first_l3 is None:
                    first_l3 = e.occurred_at
            elif body.TYPE == "StrikeRecorded":
                strikes += 1
        return Trajectory(tuple(changes), max_level, final, first_l3, strikes)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    account_id: str
    events_replayed: int
    stored: Trajectory
    candidate: Trajectory

    @property
    def differs(self) -> bool:
        return self.describe() != "same"

    def describe(self) -> str:
        s, c = self.stored, self.candidate
        parts = []
        if s.max_level != c.max_level:
            parts.append(f"max level L{s.max_level} -> L{c.max_level}")
        if s.final_level != c.final_level:
            parts.append(f"final level L{s.final_level} -> L{c.final_level}")
        if (s.first_l3_at is None) != (c.first_l3_at is None):
            parts.append("reaches L3+" if c.first_l3_at else "no longer reaches L3+")
        if s.strikes != c.strikes:
            parts.append(f"strikes {s.strikes} -> {c.strikes}")
        return "; ".join(parts) or "same"


def backtest(events: list[Event], candidate: Policy,
             since: datetime | None = None) -> BacktestResult:
    """Replay ``events``' observations through ``candidate``; ``events`` is one account's whole
    history in version order. With ``since``, the whole history is replayed (earlier strikes
    still weigh) but only the decisions from ``since`` on are compared."""
    if not events:
        raise ValueError("backtest needs at least one event")
    account, region = events[0].account_id, events[0].region
    state: AccountState = initial_state(account, region)
    replayed: list[Event] = []
    for e in events:
        body = e.body
        if not body.OBSERVATION:
            continue
        signal = Signal(e.causation_id, account, region, e.occurred_at, e.correlation_id,
                        body)  # type: ignore[arg-type]
        for new in decide(state, signal, candidate, e.occurred_at):
            state = evolve(state, new)
            replayed.append(new)
    if since is not None:
        events = [e for e in events if e.occurred_at >= since]
        replayed = [e for e in replayed if e.occurred_at >= since]
    return BacktestResult(account, len(events), Trajectory.of(events), Trajectory.of(replayed))
