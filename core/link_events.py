"""The events of links between accounts and aggregates (organisations, API keys, prompts).

An account links to an aggregate (``AccountLinked``); an organisation's or API key's history
hears of it (``MemberLinked``, forwarded through the account's outbox), a prompt's from the
scores forwarded to it; and an aggregate enforced at the policy's ``linked_trigger_level`` tells
each member (``AggregateEnforced``, forwarded through the aggregate's outbox), whose own history
then starts at the policy's ``linked_start_level`` (``core.linked_accounts``). Re-exported by
``core.events``, which lists every body type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

LinkKind: TypeAlias = Literal["organization", "api_key", "prompt"]


@dataclass(frozen=True, slots=True)
class AccountLinked:
    """The account was first seen with an aggregate (its organisation, an API key shared with
    other accounts), or sent a prompt the classifier flagged (link ``prompt``, rule
    ``link.prompt``: its score is forwarded to the prompt's own history, where every account
    that sent the same prompt flagged counts once): the aggregate's history adds up this
    account's scores with theirs, and the aggregate's level applies to this account too (a
    prompt's, to the requests that carry that prompt)."""

    TYPE: ClassVar[str] = "AccountLinked"
    SCHEMA_VERSION: ClassVar[int] = 2
    OBSERVATION: ClassVar[bool] = False

    link: LinkKind
    aggregate: str  # the aggregate's entity id: org:<id>, key:<fingerprint> or prompt:<link key>
    rule_id: str
    request_id: str
    caused_by_version: int


@dataclass(frozen=True, slots=True)
class MemberLinked:
    """In an organisation's or API key's history: ``member_account`` linked to it (that
    account's ``AccountLinked``, forwarded). The aggregate remembers its members so that its
    enforcement reaches each of them. Decides nothing in the aggregate's own history."""

    TYPE: ClassVar[str] = "MemberLinked"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    member_account: str
    link: LinkKind
    request_id: str  # the member's request that linked it


@dataclass(frozen=True, slots=True)
class AggregateEnforced:
    """In an account's history: an aggregate it is linked to stands at ``level`` (set by the
    aggregate's ``rule_id`` at its version ``aggregate_version``), at or above the policy's
    ``linked_trigger_level``. The account starts at the policy's ``linked_start_level`` (rule
    ``link.enforced``), unless it stands higher already."""

    TYPE: ClassVar[str] = "AggregateEnforced"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = True

    aggregate: str
    level: int
    rule_id: str
    aggregate_version: int


@dataclass(frozen=True, slots=True)
class LinkedEpisode:
    """In an aggregate's history: an episode of its enforcement reaching its members opens or
    closes. It opens (``opened``) when the aggregate's level stands at or above the policy's
    ``linked_trigger_level`` (``trigger_level``, as the policy in force said) with no episode open
    under that trigger: once re-enforced after a clear, or after a policy lowered the trigger
    under a level it already held. The newest ``reach`` members are told at once
    (``AggregateEnforced``, their signal ids derived from this event's version, so a redelivery
    is absorbed and the next episode tells them again), each member that joins while it lasts,
    and each older one when its next score or link arrives. It closes when the level falls
    below ``trigger_level`` (the fold sees that in the ``EnforcementChanged``), or (``closed``)
    when a policy raised the trigger above the level.
    Carries no personal field: counts and levels only."""

    TYPE: ClassVar[str] = "LinkedEpisode"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    phase: Literal["opened", "closed"]
    trigger_level: int
    level: int  # the aggregate's level when it opened or closed
    reach: int  # how many of its newest members it told at once (the policy's linked_members)
    caused_by_version: int
