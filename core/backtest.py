"""Backtests: what a candidate policy would have done with an account's recorded observations.

Observations (requests seen, scores, operator actions, appeals) are facts no policy changes; the
decisions (strikes, enforcement) are what a policy made of them. A backtest replays the facts in
their recorded order, at their recorded times, through ``decide`` with the candidate policy and
compares the enforcement trajectory with the one that was stored. Pure, like the rest of core.

Two trajectories are the same only where they take the same path: the same ordered sequence of
(level, rule) changes, not merely as many changes to the same highest and final level (``L1 ->
L2 -> L1`` by escalation is not ``L2 -> L1 -> L2``). Where paths part, the result names the
stored history's version there and the change each made (:func:`first_divergence`).

:class:`AccountReplay` is incremental (one stored event at a time, in version order), so a whole
region can be backtested in one pass over its commit-ordered feed without holding histories in
memory; :func:`backtest` is the same over one history in a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from safeguards.core.decide import decide_and_fold
from safeguards.core.errors import VersionGap
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    EnforcementChanged,
    Event,
    EventBody,
    MemberLinked,
    RequestObserved,
    ScoreRecorded,
    Signal,
    StrikeRecorded,
)
from safeguards.core.policy import Policy
from safeguards.core.state import AccountState, initial_state

# A retention base's level of L3 or more was first reached before the base: its events are gone,
# so both trajectories of a replay from it carry this instead of a time (they compare equal).
BEFORE_BASE = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Trajectory:
    """The enforcement an account went through: what operators and red teams compare."""

    changes: tuple[tuple[datetime, int, str], ...]  # (when, level, rule)
    max_level: int
    final_level: int
    first_l3_at: datetime | None
    strikes: int
    links: tuple[str, ...] = ()  # the aggregates it was linked to (AccountLinked), in order
    # (level, aggregate) of each change a linked aggregate's enforcement made (``link.enforced``)
    linked_starts: tuple[tuple[int, str], ...] = ()
    # (version, level, rule) of each change in ``changes``; version: the stored history's
    # observation it followed (the same event in both trajectories of a replay)
    steps: tuple[tuple[int, int, str], ...] = ()

    @property
    def path(self) -> tuple[tuple[int, str], ...]:
        """The (level, rule) of each enforcement change, in order."""
        return tuple((level, rule) for _, level, rule in self.steps)


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where two enforcement paths part: the stored history's version of the observation after
    which they first differ, and the (level, rule) each took there (None: it made no more)."""

    version: int
    stored: tuple[int, str] | None
    candidate: tuple[int, str] | None

    def describe(self) -> str:
        return f"path differs from v{self.version}: {_step(self.stored)} -> " \
               f"{_step(self.candidate)}"


def _step(step: tuple[int, str] | None) -> str:
    return "no further change" if step is None else f"L{step[0]} by {step[1]}"


def first_divergence(stored: Trajectory, candidate: Trajectory) -> Divergence | None:
    """The first step where the two paths of (level, rule) changes differ (None: the same)."""
    s, c = stored.steps, candidate.steps
    for i in range(max(len(s), len(c))):
        old = s[i] if i < len(s) else None
        new = c[i] if i < len(c) else None
        if old is None or new is None or old[1:] != new[1:]:
            version = min(step[0] for step in (old, new) if step is not None)
            return Divergence(version, None if old is None else (old[1], old[2]),
                              None if new is None else (new[1], new[2]))
    return None


_PLAIN = frozenset({RequestObserved, ScoreRecorded})  # change nothing a trajectory keeps


class _TrajectoryBuilder:
    __slots__ = ("changes", "enforced_by", "final", "first_l3", "linked_starts", "links",
                 "max_level", "observed", "steps", "strikes")

    def __init__(self) -> None:
        self.changes: list[tuple[datetime, int, str]] = []
        self.max_level = self.final = self.strikes = 0
        self.first_l3: datetime | None = None
        self.links: list[str] = []
        self.linked_starts: list[tuple[int, str]] = []
        self.enforced_by: dict[int, str] = {}  # version of an AggregateEnforced -> aggregate
        self.steps: list[tuple[int, int, str]] = []
        self.observed = 0  # the version of the last observation added

    def start_at(self, level: int) -> None:
        """Start from a retention base at ``level`` (the changes before it are gone)."""
        self.final = self.max_level = level
        if level >= 3:
            self.first_l3 = BEFORE_BASE

    def add(self, e: Event, observed: int | None = None) -> None:
        """``observed``: the stored observation ``e`` follows (None: the last one added)."""
        body = e.body
        if type(body) in _PLAIN:  # most events: one set lookup on the backtest's hot path
            self.observed = e.version
            return
        if body.OBSERVATION:
            self.observed = e.version
        if isinstance(body, EnforcementChanged):
            self.changes.append((e.occurred_at, body.level, body.rule_id))
            self.steps.append((self.observed if observed is None else observed, body.level,
                               body.rule_id))
            self.final = body.level
            self.max_level = max(self.max_level, body.level)
            if body.level >= 3 and self.first_l3 is None:
                self.first_l3 = e.occurred_at
            aggregate = self.enforced_by.get(body.caused_by_version)
            if aggregate is not None and body.rule_id == "link.enforced":
                self.linked_starts.append((body.level, aggregate))
        elif isinstance(body, StrikeRecorded):
            self.strikes += 1
        elif isinstance(body, AccountLinked):
            self.links.append(body.aggregate)
        elif isinstance(body, AggregateEnforced):
            self.enforced_by[e.version] = body.aggregate

    def build(self) -> Trajectory:
        return Trajectory(tuple(self.changes), self.max_level, self.final, self.first_l3,
                          self.strikes, tuple(self.links), tuple(self.linked_starts),
                          tuple(self.steps))


def trajectory_of(events: list[Event]) -> Trajectory:
    builder = _TrajectoryBuilder()
    for e in events:
        builder.add(e)
    return builder.build()


@dataclass(frozen=True, slots=True)
class BacktestResult:
    account_id: str
    events_replayed: int
    stored: Trajectory
    candidate: Trajectory
    base_version: int = 0  # replayed from the retention base at this version (0: from v1)

    @property
    def differs(self) -> bool:
        return self.describe() != "same"

    @property
    def divergence(self) -> Divergence | None:
        """Where the candidate's path of (level, rule) changes first parts from the stored one."""
        return first_divergence(self.stored, self.candidate)

    def describe(self) -> str:
        s, c = self.stored, self.candidate
        parts = []
        if s.max_level != c.max_level:
            parts.append(f"max level L{s.max_level} -> L{c.max_level}")
        if s.final_level != c.final_level:
            parts.append(f"final level L{s.final_level} -> L{c.final_level}")
        if (s.first_l3_at is None) != (c.first_l3_at is None):
            parts.append("reaches L3+" if c.first_l3_at else "no longer reaches L3+")
        elif s.first_l3_at is not None and c.first_l3_at is not None \
                and s.first_l3_at != c.first_l3_at:
            delta = (c.first_l3_at - s.first_l3_at).total_seconds()
            parts.append(f"L3+ {_span(abs(delta))} {'later' if delta > 0 else 'earlier'}")
        if len(s.changes) != len(c.changes):
            parts.append(f"enforcement changes {len(s.changes)} -> {len(c.changes)}")
        divergence = self.divergence
        if divergence is not None:
            parts.append(divergence.describe())
        if s.strikes != c.strikes:
            parts.append(f"strikes {s.strikes} -> {c.strikes}")
        if s.linked_starts != c.linked_starts:
            parts.append(f"linked starts {_starts(s.linked_starts)} -> {_starts(c.linked_starts)}")
        if s.links != c.links:
            parts.append(f"links {', '.join(s.links) or 'none'} -> {', '.join(c.links) or 'none'}")
        return "; ".join(parts) or "same"

    def links_line(self) -> str:
        """The candidate's links and what their enforcement did ('' where it has none)."""
        c = self.candidate
        if not c.links and not c.linked_starts:
            return ""
        return (f"linked to {', '.join(c.links) or 'nothing it linked itself'}; "
                f"linked starts {_starts(c.linked_starts)}")


def _starts(starts: tuple[tuple[int, str], ...]) -> str:
    return ", ".join(f"L{level} from {aggregate}" for level, aggregate in starts) or "none"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def strike_potential(body: EventBody) -> float:
    """The highest score this event could strike on under any policy: a score's maximum, 0 for
    a request the gate did not throttle and for an aggregate's new member, 1 for everything else
    (decisions, operator actions, appeals, throttles, a linked aggregate's enforcement), which
    always needs a replay. An account whose every event is below a
    candidate's lowest ``accumulate_above`` cannot be treated differently by it: it strikes
    nothing under either policy, and has no decisions or operator actions to compare."""
    if isinstance(body, ScoreRecorded):
        return 0.0 if body.shadow else max((s for _, s in body.scores), default=0.0)
    if isinstance(body, RequestObserved):
        return 1.0 if body.action == "throttle" else 0.0
    if isinstance(body, MemberLinked):
        return 0.0  # an aggregate's new member: no policy decides anything on it
    return 1.0


def replay_floor(policy: Policy) -> float:
    """The lowest score on which ``policy`` strikes (1.0: never, so only decided accounts)."""
    return min((c.accumulate_above for c in policy.enabled_categories), default=1.0)


class AccountReplay:
    """Replays one account's stored events, as they arrive in version order, through a policy.

    With ``since``, everything is replayed (earlier strikes still weigh) but only decisions at
    or after ``since`` are compared. With ``start``, a truncated history's retention base (its
    state at the last version retention removed): the replay folds on from it, since the
    observations before it are gone, and both trajectories start at its level where the first
    event after it is compared (so only decisions after the base can differ). Each event must
    follow the one before (the first: the base, or nothing): a hole is a ``VersionGap``.
    """

    __slots__ = ("_candidate", "_policy", "_seed", "_since", "_state", "_stored", "_version",
                 "account_id", "base_version", "events")

    def __init__(self, account_id: str, region: str, candidate: Policy,
                 since: datetime | None = None, start: AccountState | None = None) -> None:
        self.account_id = account_id
        self.events = 0
        self._policy = candidate
        self._since = since
        self._state = initial_state(account_id, region) if start is None else start
        self.base_version = self._version = self._state.version
        self._seed = start
        self._stored = _TrajectoryBuilder()
        self._candidate = _TrajectoryBuilder()

    def add(self, e: Event) -> None:
        if e.version != self._version + 1:  # never replay a history with a hole as a whole one
            raise VersionGap(f"account {self.account_id!r}: replayed to version {self._version}"
                             f"{' from its retention base' if self.base_version else ''}, "
                             f"handed version {e.version}")
        self._version = e.version
        counted = self._since is None or e.occurred_at >= self._since
        if self._seed is not None:
            if counted:  # the compared window starts at the base: so do both trajectories
                self._stored.start_at(self._seed.level)
                self._candidate.start_at(self._seed.level)
            self._seed = None
        if counted:
            self.events += 1
            self._stored.add(e)
        body = e.body
        if not body.OBSERVATION:
            return
        signal = Signal(e.causation_id, e.account_id, e.region, e.occurred_at,
                        e.correlation_id, body)  # type: ignore[arg-type]
        new, self._state = decide_and_fold(self._state, signal, self._policy, e.occurred_at,
                                           ids=False)
        if counted:
            for n in new:
                self._candidate.add(n, e.version)

    def result(self) -> BacktestResult:
        return BacktestResult(self.account_id, self.events, self._stored.build(),
                              self._candidate.build(), self.base_version)


def backtest(events: list[Event], candidate: Policy, since: datetime | None = None,
             start: AccountState | None = None) -> BacktestResult:
    """Replay one account's whole history (version order) through ``candidate``; a truncated
    one's from its retention base ``start`` (``AccountReplay``)."""
    if not events:
        raise ValueError("backtest needs at least one event")
    replay = AccountReplay(events[0].account_id, events[0].region, candidate, since, start)
    for e in events:
        replay.add(e)
    return replay.result()
