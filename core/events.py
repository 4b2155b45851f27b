"""The events of an account's life, and the signals that lead to them.

An :class:`Event` is the envelope every stored fact shares (ids, account, region, version, time,
causation, correlation, policy version); its ``body`` is one of the typed bodies below. Bodies
hold metadata only: scores, categories, hashes and lengths, never prompt or completion text.

Events split in two families. *Observations* record what came in (a request was seen, a
classifier scored it, an operator acted or claimed a review, an appeal was filed); they are facts a
new policy cannot change. *Decisions* (strikes, enforcement changes, review requests, shadow
decisions) are what a policy made of them; a backtest re-derives decisions from the observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal, TypeAlias

# The link and erasure events live in their own modules; importers find every body type here.
from safeguards.core.erasure import AccountErased as AccountErased
from safeguards.core.link_events import AccountLinked as AccountLinked
from safeguards.core.link_events import AggregateEnforced as AggregateEnforced
from safeguards.core.link_events import LinkedEpisode as LinkedEpisode
from safeguards.core.link_events import MemberLinked as MemberLinked

Scores: TypeAlias = tuple[tuple[str, float], ...]
ContentKind: TypeAlias = Literal["prompt", "completion"]


@dataclass(frozen=True, slots=True)
class RequestObserved:
    """One request through the serving path; metadata only. The organisation and project are
    the ids the CSP passed with the request, the API key its regional fingerprint (an HMAC of the
    key's id, never the id); None when the CSP passed none. ``prompt_link`` is the regional link
    key of its newest user turn (``core.prompt_links``: an HMAC, never the text); None where it
    had none. ``fallback`` is the gate's fail-open or fail-closed fallback on it, as
    ``<mode>:<cause>`` (``open:screen_classifier_timeout``, ``closed:stale_cache``; causes as
    ``safeguards_csp_fallbacks_total`` counts them), None where it decided normally: the durable
    record of when inline screening failed open or closed (``ops timeline``)."""

    TYPE: ClassVar[str] = "RequestObserved"
    SCHEMA_VERSION: ClassVar[int] = 5
    OBSERVATION: ClassVar[bool] = True

    request_id: str
    model: str
    surface: str  # which serving path saw it: "proxy", "ext_proc", "hook"
    input_tokens: int
    output_tokens: int
    prompt_chars: int
    prompt_sha256: str
    streamed: bool
    action: str  # what the gate did: allow, intervene, throttle, block, terminate_stream
    organization_id: str | None = None
    project_id: str | None = None
    api_key_fingerprint: str | None = None
    prompt_link: str | None = None
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreRecorded:
    """A classifier's scores for one piece of content; the text itself is never stored.

    In an organisation's history, ``member_account`` names the account whose request it was;
    in an account's own history it is None. ``prompt_link``, on a prompt's score in its
    account's own history, is the prompt's link key (``core.prompt_links``, a keyed hash, never
    text) as the gate computed it: a batch prompt is scored before its request is observed, so
    a flagged one links the account to the prompt by it (``core.decide._link_prompt``)."""

    TYPE: ClassVar[str] = "ScoreRecorded"
    SCHEMA_VERSION: ClassVar[int] = 3
    OBSERVATION: ClassVar[bool] = True

    request_id: str
    content_kind: ContentKind
    content_sha256: str
    content_chars: int
    model_name: str
    model_version: str
    scores: Scores
    shadow: bool = False
    member_account: str | None = None
    prompt_link: str | None = None


@dataclass(frozen=True, slots=True)
class StrikeRecorded:
    """A score crossed a category threshold; ``total_after`` is the decayed total it produced."""

    TYPE: ClassVar[str] = "StrikeRecorded"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    category: str
    score: float
    points: float
    total_after: float
    half_life_s: float
    rule_id: str
    request_id: str
    model_name: str
    model_version: str
    caused_by_version: int  # the ScoreRecorded event this strike came from


@dataclass(frozen=True, slots=True)
class EnforcementChanged:
    TYPE: ClassVar[str] = "EnforcementChanged"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    level: int
    previous_level: int
    expires_at: datetime | None
    reason: str
    rule_id: str
    risk_total: float
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class OperatorActionTaken:
    """An operator's override; ``action`` is ``set_level``, ``clear``, ``note``, ``approve`` or
    ``reject``.

    ``approve`` is a second operator agreeing to the action an account's ``ApprovalRequested``
    holds; its ``level`` repeats that action's target (0 for a clear), so nobody approves
    something other than what they read. ``reject`` (an admin declining it, or its proposer
    withdrawing it) drops that action, named the same way, and changes nothing else."""

    TYPE: ClassVar[str] = "OperatorActionTaken"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    operator: str
    action: Literal["set_level", "clear", "note", "approve", "reject"]
    level: int | None
    expires_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """An operator asked for an action that takes two people (``core.operators.
    needs_second_operator``: terminating an account, clearing or lowering a suspended one). It is
    recorded in place of the action and changes nothing until another operator approves it."""

    TYPE: ClassVar[str] = "ApprovalRequested"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    operator: str
    action: Literal["set_level", "clear"]
    level: int  # the target level (0 for a clear)
    expires_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class ApprovalGranted:
    """A second operator approved the pending ``ApprovalRequested``: its action takes effect now
    (a clear also forgives the account's points, as a clear does)."""

    TYPE: ClassVar[str] = "ApprovalGranted"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    approver: str
    operator: str  # who asked
    action: Literal["set_level", "clear"]
    level: int
    reason: str  # the approver's
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class ReviewRequested:
    """Automatic enforcement stopped short of ``proposed_level``: a person decides whether the
    account goes there. The review stays open until an operator sets or clears the level."""

    TYPE: ClassVar[str] = "ReviewRequested"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    proposed_level: int
    reason: str
    rule_id: str
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class ReviewClaimed:
    """An operator took an account's open review; the decision follows as an operator action."""

    TYPE: ClassVar[str] = "ReviewClaimed"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    operator: str
    reason: str


@dataclass(frozen=True, slots=True)
class AppealFiled:
    TYPE: ClassVar[str] = "AppealFiled"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    appeal_id: str
    filed_by: str
    reason: str


@dataclass(frozen=True, slots=True)
class AppealResolved:
    TYPE: ClassVar[str] = "AppealResolved"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    appeal_id: str
    operator: str
    outcome: Literal["upheld", "overturned"]
    level_after: int
    reason: str


@dataclass(frozen=True, slots=True)
class PolicyProposed:
    """An operator asked for a new region policy (in the region's policy history,
    ``policy:<region>``). ``document`` is the whole TOML text: policies hold no user content."""

    TYPE: ClassVar[str] = "PolicyProposed"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    operator: str
    reason: str
    document: str


@dataclass(frozen=True, slots=True)
class PolicyChanged:
    """The region's policy in force from here on: every part (actors, gates) applies it."""

    TYPE: ClassVar[str] = "PolicyChanged"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    policy_version: str
    sha256: str
    document: str
    operator: str
    reason: str
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class PolicyRejected:
    """A proposed policy that did not validate; ``problems`` lists why. Nothing changed."""

    TYPE: ClassVar[str] = "PolicyRejected"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    problems: str
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """What a rule in shadow mode would have done; it changes no enforcement."""

    TYPE: ClassVar[str] = "ShadowDecision"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    rule_id: str
    would_level: int
    current_level: int
    reason: str
    caused_by_version: int


Observation: TypeAlias = (
    RequestObserved | ScoreRecorded | OperatorActionTaken | ReviewClaimed | AppealFiled
    | AppealResolved | PolicyProposed | MemberLinked | AggregateEnforced
)

EventBody: TypeAlias = (
    RequestObserved
    | ScoreRecorded
    | StrikeRecorded
    | AccountLinked
    | EnforcementChanged
    | OperatorActionTaken
    | ApprovalRequested
    | ApprovalGranted
    | ReviewRequested
    | ReviewClaimed
    | AppealFiled
    | AppealResolved
    | ShadowDecision
    | PolicyProposed
    | PolicyChanged
    | PolicyRejected
    | MemberLinked
    | AggregateEnforced
    | LinkedEpisode
    | AccountErased
)

EVENT_TYPES: dict[str, type[EventBody]] = {
    cls.TYPE: cls
    for cls in (
        RequestObserved,
        ScoreRecorded,
        StrikeRecorded,
        AccountLinked,
        EnforcementChanged,
        OperatorActionTaken,
        ApprovalRequested,
        ApprovalGranted,
        ReviewRequested,
        ReviewClaimed,
        AppealFiled,
        AppealResolved,
        ShadowDecision,
        PolicyProposed,
        PolicyChanged,
        PolicyRejected,
        MemberLinked,
        AggregateEnforced,
        LinkedEpisode,
        AccountErased,
    )
}


@dataclass(frozen=True, slots=True)
class Event:
    """One stored fact about one account, at one gap-free per-account version."""

    event_id: str
    account_id: str
    region: str
    version: int
    occurred_at: datetime
    causation_id: str
    correlation_id: str
    policy_version: str | None
    body: EventBody

    @property
    def type(self) -> str:
        return self.body.TYPE

    @property
    def schema_version(self) -> int:
        return self.body.SCHEMA_VERSION


# --- signals: what arrives at an account actor ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """An input for one account. ``signal_id`` is its idempotency key (the actor's inbox key).

    ``observation`` is the fact to record (an observation body); ``decide`` turns it into the
    observation event plus whatever the policy makes of it. A signal with no observation is a tick:
    it only lets time pass, so that expiries fire.
    """

    signal_id: str
    account_id: str
    region: str
    occurred_at: datetime
    correlation_id: str
    observation: Observation | None = field(default=None)

    def sent_on(self, signal_id: str, account_id: str, observation: Observation) -> Signal:
        """A signal this one's decision sends to another history through the outbox (a score
        forwarded to a prompt, a link to an organisation, an enforcement to a member): same
        region, time and correlation; ``signal_id`` derives from its causes."""
        return Signal(signal_id, account_id, self.region, self.occurred_at, self.correlation_id,
                      observation)
