"""An account's state and the fold that builds it: ``evolve(state, event) -> state``.

``evolve`` applies facts; it makes no judgement (that is ``decide``'s job), needs no policy, and
refuses a version gap. Decayed quantities are stored as (total, as_of, half-life) so that any
later time can read them without the fold knowing the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from safeguards.core.aggregate_members import MAX_MEMBERS as MAX_MEMBERS
from safeguards.core.aggregate_members import NO_MEMBERS, Membership
from safeguards.core.errors import VersionGap
from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    AppealFiled,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    PolicyChanged,
    PolicyProposed,
    PolicyRejected,
    RequestObserved,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    ShadowDecision,
    StrikeRecorded,
)
from safeguards.core.ids import PROMPT_PREFIX

# Bump whenever ``evolve`` or AccountState changes meaning: stored snapshots made by another fold
# version are rebuilt from events, never trusted; retention bases, whose events are gone, are
# carried instead: a bump adds the step ``core.upcasters.STATE_UPCASTERS`` carries them with.
FOLD_VERSION = 7
# How many recently scored contents an account remembers (by sha256): the same content scored
# again (a retry, a replayed prompt) is the same evidence, never a second strike. The fold
# rebuilds this tuple on every score: 16 keeps the fold at 0.76x of its speed without it, 64
# at 0.66x (benchmarks/fold.py, against the fold before either).
RECENT_CONTENT = 16
# How many of its strongest strikes (from distinct requests) an account keeps per category: the
# evidence that lets a severe category escalate past the automatic limit. A policy may ask for at
# most this many (``severe_evidence``).
STRONGEST_KEPT = 10
# How many aggregates (organisations, API keys, prompts) an account remembers being linked to,
# newest kept.
MAX_LINKS = 16
# How many of its latest requests' prompt link keys an account remembers (request id, key), so
# that a score arriving after its request can link the account to the prompt it flagged.
RECENT_PROMPTS = 16
MEMBER_KEY = "member:"  # a prompt's evidence key: the account that sent it (``evidence_key``)

Evidence: TypeAlias = tuple[str, float, str]  # (category, score, request id) of one strike


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
class PendingApproval:
    """An action waiting for a second operator (``ApprovalRequested`` at ``version``)."""

    version: int
    operator: str
    action: str  # "set_level" or "clear"
    level: int
    expires_at: datetime | None
    reason: str
    requested_at: datetime


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
    recent_content: tuple[str, ...] = ()  # sha256 of the last RECENT_CONTENT scored contents
    strongest: tuple[Evidence, ...] = ()  # each category's STRONGEST_KEPT strongest strikes
    review_level: int = 0  # the level an open review proposes; 0: no review is open
    links: tuple[str, ...] = ()  # aggregates (org:<id>, key:<fp>, prompt:<key>) it was linked to
    pending_approval: PendingApproval | None = None  # an action awaiting a second operator
    # (request id, prompt link key) of its last RECENT_PROMPTS requests that had one
    recent_prompts: tuple[tuple[str, str], ...] = ()
    # In an aggregate's history: its members and the episode of its enforcement reaching them
    membership: Membership = NO_MEMBERS

    def prompt_of(self, request_id: str) -> str | None:
        """The prompt link key of one of its recent requests (None: none remembered)."""
        for request, link in self.recent_prompts:
            if request == request_id:
                return link
        return None

    @property
    def member_accounts(self) -> tuple[str, ...]:
        """In an aggregate's history: its members, first seen first (``Membership``)."""
        return self.membership.accounts

    @property
    def members(self) -> int:
        """In a prompt's history: how many distinct accounts (of the last RECENT_CONTENT) sent
        it flagged."""
        return sum(1 for key in self.recent_content if key.startswith(MEMBER_KEY))

    def evidence(self, category: str, at_least: float) -> int:
        """Distinct requests whose strike in ``category`` scored ``at_least`` (counted up to
        STRONGEST_KEPT)."""
        return sum(1 for cat, score, _ in self.strongest if cat == category and score >= at_least)

    def risk_of(self, category: str) -> CategoryRisk | None:
        for r in self.risk:
            if r.category == category:
                return r
        return None

    def risk_total(self, now: datetime) -> float:
        return sum(r.at(now) for r in self.risk)


def evidence_key(account_id: str, score: ScoreRecorded) -> str:
    """What makes a score distinct evidence in ``account_id``'s history (kept in
    ``recent_content``): its content, except in a prompt's history, whose every score is of the
    same prompt: there each account that sent it counts once."""
    if score.member_account is not None and account_id.startswith(PROMPT_PREFIX):
        return MEMBER_KEY + score.member_account
    return score.content_sha256


class _StateUnderConstruction:
    """AccountState's slots, in its order, without its frozen guard: the fold fills one with
    plain slot stores (a frozen dataclass's ``__init__`` makes one ``object.__setattr__`` call
    per field, about seven times slower), then :func:`_state` turns it into the AccountState it
    is (``__class__`` assignment, which Python allows only between identical layouts)."""

    __slots__ = AccountState.__slots__


_new = object.__new__


def _state(account_id: str, region: str, version: int, level: int,
           level_expires_at: datetime | None, level_reason: str, level_rule: str,
           level_version: int, level_policy_version: str | None, risk: tuple[CategoryRisk, ...],
           strikes: int, requests: int, scores: int, last_seen: datetime | None,
           open_appeals: tuple[str, ...], recent_content: tuple[str, ...],
           strongest: tuple[Evidence, ...], review_level: int, links: tuple[str, ...],
           pending_approval: PendingApproval | None,
           recent_prompts: tuple[tuple[str, str], ...], membership: Membership) -> AccountState:
    """``AccountState(...)`` with every field given, in its order: the same state, equal and of
    the same class, built several times faster. The fold builds one per event, and loads,
    replays and backtests run on the fold."""
    s: Any = _new(_StateUnderConstruction)
    s.account_id = account_id
    s.region = region
    s.version = version
    s.level = level
    s.level_expires_at = level_expires_at
    s.level_reason = level_reason
    s.level_rule = level_rule
    s.level_version = level_version
    s.level_policy_version = level_policy_version
    s.risk = risk
    s.strikes = strikes
    s.requests = requests
    s.scores = scores
    s.last_seen = last_seen
    s.open_appeals = open_appeals
    s.recent_content = recent_content
    s.strongest = strongest
    s.review_level = review_level
    s.links = links
    s.pending_approval = pending_approval
    s.recent_prompts = recent_prompts
    s.membership = membership
    s.__class__ = AccountState
    built: AccountState = s
    return built


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
    # Each branch builds the new state in one ``_state`` call: the fold is the hot path of
    # loads, replays and backtests, and dataclasses.replace costs several times more.
    if isinstance(body, RequestObserved):
        prompts = s.recent_prompts if body.prompt_link is None else (
            *s.recent_prompts[1 - RECENT_PROMPTS:], (body.request_id, body.prompt_link))
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests + 1, s.scores, at, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, s.links,
                      s.pending_approval, prompts, s.membership)
    if isinstance(body, ScoreRecorded):
        recent = s.recent_content
        member = body.member_account
        # an account's own score (no member named) is keyed by its content: evidence_key inline
        key = body.content_sha256 if member is None else evidence_key(s.account_id, body)
        if key not in recent:
            recent = (*recent[1 - RECENT_CONTENT:], key)
        members = s.membership if member is None else s.membership.with_member(member)
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores + 1, at, s.open_appeals, recent,
                      s.strongest, s.review_level, s.links, s.pending_approval,
                      s.recent_prompts, members)
    if isinstance(body, StrikeRecorded):
        updated = CategoryRisk(body.category, body.total_after, at, body.half_life_s)
        risk = (*tuple(r for r in s.risk if r.category != body.category), updated)
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, risk,
                      s.strikes + 1, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content,
                      _stronger(s.strongest, body.category, body.score, body.request_id),
                      s.review_level, s.links, s.pending_approval,
                      s.recent_prompts, s.membership)
    if isinstance(body, EnforcementChanged):
        membership = s.membership
        if membership.episode and body.level < membership.episode_trigger:  # the episode ends
            membership = membership.closed()
        return _state(s.account_id, s.region, v, body.level, body.expires_at, body.reason,
                      body.rule_id, v, event.policy_version, s.risk, s.strikes, s.requests,
                      s.scores, s.last_seen, s.open_appeals, s.recent_content, s.strongest,
                      s.review_level, s.links, s.pending_approval,
                      s.recent_prompts, membership)
    if isinstance(body, OperatorActionTaken):
        # Clearing an account forgives its accumulated points (and the evidence behind them):
        # otherwise the next strike would put it straight back where the operator took it from.
        # Setting or clearing the level is the decision an open review waits for.
        # An action that takes effect also settles any action still waiting for approval.
        if not settles_review(body):
            pending = s.pending_approval  # a reject drops the action it names, nothing else
            if body.action == "reject" and pending is not None and pending.level == body.level:
                pending = None
            return _state(s.account_id, s.region, v, s.level, s.level_expires_at,
                          s.level_reason, s.level_rule, s.level_version,
                          s.level_policy_version, s.risk, s.strikes, s.requests, s.scores,
                          s.last_seen, s.open_appeals, s.recent_content, s.strongest,
                          s.review_level, s.links, pending, s.recent_prompts, s.membership)
        return _acted(s, v, cleared=body.action == "clear")
    if isinstance(body, ApprovalRequested):
        pending = PendingApproval(v, body.operator, body.action, body.level, body.expires_at,
                                  body.reason, at)
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, s.links, pending,
                      s.recent_prompts, s.membership)
    if isinstance(body, ApprovalGranted):  # the approved action takes effect, as one would
        return _acted(s, v, cleared=body.action == "clear")
    if isinstance(body, ReviewRequested):
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, body.proposed_level, s.links,
                      s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, AppealFiled):
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen,
                      (*s.open_appeals, body.appeal_id), s.recent_content, s.strongest,
                      s.review_level, s.links, s.pending_approval,
                      s.recent_prompts, s.membership)
    if isinstance(body, AppealResolved):
        overturned = body.outcome == "overturned"
        appeals = tuple(a for a in s.open_appeals if a != body.appeal_id)
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version,
                      () if overturned else s.risk, s.strikes, s.requests, s.scores,
                      s.last_seen, appeals, s.recent_content,
                      () if overturned else s.strongest, s.review_level, s.links,
                      s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, AccountLinked):
        links = s.links if body.aggregate in s.links else (
            *s.links[1 - MAX_LINKS:], body.aggregate)
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, links,
                      s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, MemberLinked):
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, s.links,
                      s.pending_approval, s.recent_prompts,
                      s.membership.with_member(body.member_account))
    if isinstance(body, LinkedEpisode):
        episode = (s.membership.opened(v, body.trigger_level, body.reach)
                   if body.phase == "opened" else s.membership.closed())
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, s.links,
                      s.pending_approval, s.recent_prompts, episode)
    if isinstance(body, ShadowDecision | ReviewClaimed | PolicyProposed | PolicyChanged
                  | PolicyRejected | AggregateEnforced | AccountErased):  # change no state
        return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                      s.level_rule, s.level_version, s.level_policy_version, s.risk,
                      s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                      s.recent_content, s.strongest, s.review_level, s.links,
                      s.pending_approval, s.recent_prompts, s.membership)
    raise TypeError(f"evolve has no case for {type(body).__name__}")


def settles_review(body: object) -> bool:
    """Whether an event with this body settles an open review (``review_level`` back to 0, in
    ``_acted``): an operator's set_level or clear, or a second operator's ``ApprovalGranted``.
    An ``approve`` settles nothing itself: ``core.decide`` records an ``ApprovalGranted`` after
    it only where it carries out the action awaiting approval (not one's own, another level's or
    a lapsed one); nor does a note or a reject. The review queue (adapters/store) reads this."""
    return isinstance(body, ApprovalGranted) or (
        isinstance(body, OperatorActionTaken) and body.action in ("set_level", "clear"))


def _acted(s: AccountState, v: int, *, cleared: bool) -> AccountState:
    """An operator's set_level or clear took effect: a clear forgives the points (and the
    evidence behind them); either settles an open review and any action awaiting approval."""
    return _state(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                  s.level_rule, s.level_version, s.level_policy_version,
                  () if cleared else s.risk, s.strikes, s.requests, s.scores, s.last_seen,
                  s.open_appeals, s.recent_content, () if cleared else s.strongest, 0,
                  s.links, None, s.recent_prompts, s.membership)


def _stronger(strongest: tuple[Evidence, ...], category: str, score: float,
              request_id: str) -> tuple[Evidence, ...]:
    """``strongest`` with this strike counted: per category, the STRONGEST_KEPT highest scores
    from distinct requests (a request scored twice, prompt and completion, counts once)."""
    kept = 0
    weakest = -1
    for i, (cat, kept_score, kept_request) in enumerate(strongest):
        if cat != category:
            continue
        if kept_request == request_id:
            if kept_score >= score:
                return strongest
            return (*strongest[:i], (category, score, request_id), *strongest[i + 1:])
        kept += 1
        if weakest < 0 or kept_score < strongest[weakest][1]:
            weakest = i
    if kept < STRONGEST_KEPT:
        return (*strongest, (category, score, request_id))
    if score <= strongest[weakest][1]:
        return strongest
    return (*strongest[:weakest], (category, score, request_id), *strongest[weakest + 1:])


def fold(state: AccountState, events: list[Event] | tuple[Event, ...]) -> AccountState:
    for event in events:
        state = evolve(state, event)
    return state
