"""An account's state and the fold that builds it: ``evolve(state, event) -> state``.

``evolve`` applies facts; it makes no judgement (that is ``decide``'s job), needs no policy, and
refuses a version gap. Decayed quantities are stored as (total, as_of, half-life) so that any
later time can read them without the fold knowing the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

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
# version are discarded and rebuilt from events, never trusted.
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
# How many member accounts an aggregate (organisation, API key, prompt) remembers, newest kept:
# the most its enforcement can reach at once (``core.linked_accounts``; the policy's
# ``escalation.linked_members`` says how many it does, default 256). One forgotten is reached
# with its next score or link. The bound is the fold's, not the policy's, so that a replay folds
# the same state under any policy: 1,024 ids of at most 128 characters keep a snapshot under
# ~140 KB, and a member's score costs one set lookup (``Membership``), whatever the count.
MAX_MEMBERS = 1024
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


@dataclass(frozen=True)
class Membership:
    """In an aggregate's history: the accounts linked to it (``MemberLinked``, or a member's
    score), first seen first, the newest MAX_MEMBERS kept, and the episode of its enforcement
    reaching them (``LinkedEpisode``) in course, if one is.

    Not slotted: it keeps a lazily built set of its accounts beside its fields (never encoded,
    never compared), so that a member's score costs one lookup; the same ``Membership`` passes
    from state to state until a member joins, so the set is built once per new member."""

    accounts: tuple[str, ...] = ()
    # the version of the LinkedEpisode that opened the episode in course (0: none is), and the
    # trigger level it opened under; the episode ends when the level falls below that
    episode: int = 0
    episode_trigger: int = 0
    # how many of the oldest accounts the episode in course has not told (past its reach when
    # it opened): each moves to the newest, and is told, when its next score or link arrives
    untold: int = 0

    def __contains__(self, account: object) -> bool:
        index: frozenset[str] | None = self.__dict__.get("_index")
        if index is None:
            index = frozenset(self.accounts)
            object.__setattr__(self, "_index", index)
        return account in index

    def is_untold(self, account: str) -> bool:
        """``account`` is one of the members the episode in course has not told."""
        return bool(self.untold) and account in self.accounts[:self.untold]

    def with_member(self, member: str) -> Membership:
        """These members with ``member``, newest last: one forgotten comes back as new with its
        next score or link, and one the episode in course has not told moves to the newest."""
        if member in self:
            if not self.is_untold(member):
                return self
            rest = tuple(a for a in self.accounts if a != member)
            return Membership((*rest, member), self.episode, self.episode_trigger,
                              self.untold - 1)
        accounts = (*self.accounts[1 - MAX_MEMBERS:], member)
        dropped = len(self.accounts) + 1 - len(accounts)
        return Membership(accounts, self.episode, self.episode_trigger,
                          max(0, self.untold - dropped))

    def opened(self, episode: int, trigger: int, reach: int) -> Membership:
        """The episode opened at version ``episode`` told the newest ``reach`` members."""
        return Membership(self.accounts, episode, trigger, max(0, len(self.accounts) - reach))

    def closed(self) -> Membership:
        return Membership(self.accounts)

    def added_since(self, before: Membership) -> tuple[str, ...]:
        """The members that joined, or moved to the newest untold, since ``before`` (an earlier
        state's), first seen first: a suffix of ``accounts``."""
        if self is before:
            return ()
        start = len(self.accounts)
        while start > 0 and (self.accounts[start - 1] not in before
                             or before.is_untold(self.accounts[start - 1])):
            start -= 1
        return self.accounts[start:]


NO_MEMBERS = Membership()


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
        prompts = s.recent_prompts if body.prompt_link is None else (
            *s.recent_prompts[1 - RECENT_PROMPTS:], (body.request_id, body.prompt_link))
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests + 1, s.scores, at, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, s.links,
                            s.pending_approval, prompts, s.membership)
    if isinstance(body, ScoreRecorded):
        recent = s.recent_content
        key = evidence_key(s.account_id, body)
        if key not in recent:
            recent = (*recent[1 - RECENT_CONTENT:], key)
        members = s.membership if body.member_account is None else s.membership.with_member(
            body.member_account)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores + 1, at, s.open_appeals, recent,
                            s.strongest, s.review_level, s.links, s.pending_approval,
                            s.recent_prompts, members)
    if isinstance(body, StrikeRecorded):
        updated = CategoryRisk(body.category, body.total_after, at, body.half_life_s)
        risk = (*tuple(r for r in s.risk if r.category != body.category), updated)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
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
        return AccountState(s.account_id, s.region, v, body.level, body.expires_at, body.reason,
                            body.rule_id, v, event.policy_version, s.risk, s.strikes, s.requests,
                            s.scores, s.last_seen, s.open_appeals, s.recent_content, s.strongest,
                            s.review_level, s.links, s.pending_approval,
                            s.recent_prompts, membership)
    if isinstance(body, OperatorActionTaken):
        # Clearing an account forgives its accumulated points (and the evidence behind them):
        # otherwise the next strike would put it straight back where the operator took it from.
        # Setting or clearing the level is the decision an open review waits for.
        # An action that takes effect also settles any action still waiting for approval.
        if body.action in ("note", "approve"):
            return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at,
                                s.level_reason, s.level_rule, s.level_version,
                                s.level_policy_version, s.risk, s.strikes, s.requests, s.scores,
                                s.last_seen, s.open_appeals, s.recent_content, s.strongest,
                                s.review_level, s.links, s.pending_approval, s.recent_prompts,
                                s.membership)
        return _acted(s, v, cleared=body.action == "clear")
    if isinstance(body, ApprovalRequested):
        pending = PendingApproval(v, body.operator, body.action, body.level, body.expires_at,
                                  body.reason, at)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, s.links, pending,
                            s.recent_prompts, s.membership)
    if isinstance(body, ApprovalGranted):  # the approved action takes effect, as one would
        return _acted(s, v, cleared=body.action == "clear")
    if isinstance(body, ReviewRequested):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, body.proposed_level, s.links,
                            s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, AppealFiled):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen,
                            (*s.open_appeals, body.appeal_id), s.recent_content, s.strongest,
                            s.review_level, s.links, s.pending_approval,
                            s.recent_prompts, s.membership)
    if isinstance(body, AppealResolved):
        overturned = body.outcome == "overturned"
        appeals = tuple(a for a in s.open_appeals if a != body.appeal_id)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version,
                            () if overturned else s.risk, s.strikes, s.requests, s.scores,
                            s.last_seen, appeals, s.recent_content,
                            () if overturned else s.strongest, s.review_level, s.links,
                            s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, AccountLinked):
        links = s.links if body.aggregate in s.links else (
            *s.links[1 - MAX_LINKS:], body.aggregate)
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, links,
                            s.pending_approval, s.recent_prompts, s.membership)
    if isinstance(body, MemberLinked):
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, s.links,
                            s.pending_approval, s.recent_prompts,
                            s.membership.with_member(body.member_account))
    if isinstance(body, LinkedEpisode):
        episode = (s.membership.opened(v, body.trigger_level, body.reach)
                   if body.phase == "opened" else s.membership.closed())
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, s.links,
                            s.pending_approval, s.recent_prompts, episode)
    if isinstance(body, ShadowDecision | ReviewClaimed | PolicyProposed | PolicyChanged
                  | PolicyRejected | AggregateEnforced | AccountErased):  # change no state
        return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
                            s.level_rule, s.level_version, s.level_policy_version, s.risk,
                            s.strikes, s.requests, s.scores, s.last_seen, s.open_appeals,
                            s.recent_content, s.strongest, s.review_level, s.links,
                            s.pending_approval, s.recent_prompts, s.membership)
    raise TypeError(f"evolve has no case for {type(body).__name__}")


def _acted(s: AccountState, v: int, *, cleared: bool) -> AccountState:
    """An operator's set_level or clear took effect: a clear forgives the points (and the
    evidence behind them); either settles an open review and any action awaiting approval."""
    return AccountState(s.account_id, s.region, v, s.level, s.level_expires_at, s.level_reason,
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
