"""Linked accounts start where the policy puts them: an aggregate's enforcement reaches its members.

An account linked to an aggregate (its organisation, an API key it shares, a harmful prompt it
sent: ``AccountLinked``) is a member of the aggregate's history, which learns of it through the
account's outbox: an organisation or API key from a ``MemberLinked`` signal
(:func:`member_links`), a prompt from the score forwarded to it (``core.prompt_links``); either
lands in the aggregate's ``membership``. When the aggregate's own level reaches the policy's
``linked_trigger_level``, its outbox tells its newest ``linked_members`` members
(``AggregateEnforced``, :func:`enforced_members`), each member that joins while it stays there,
and each older one when its next score or link arrives. The member's
decision starts it at ``linked_start_level`` (:func:`linked_start`, rule ``link.enforced``): never
lowering its level, never past L3 (L4 and L5 stay with people and review).

Members are told per *episode* (``LinkedEpisode`` in the aggregate's history,
:func:`episode_change`): one opens when a decision leaves the aggregate at or above the policy's
trigger with none open under that trigger, and the fold closes it when the level falls below the
trigger it opened under. Every forwarded signal's id derives from its causes (the member, the
aggregate, the episode's version), so a decision replayed or redelivered forwards the same
signals and the receiving inbox absorbs them, while an aggregate cleared and enforced again opens
a new episode and tells its members again. A policy change is no signal to an aggregate: the
nodes swap the policy they decide by, so a lowered trigger reaches an aggregate already standing
at it with the aggregate's next decision (its next member's score or link, an operator's action),
which opens the episode under the new trigger (:func:`episode_change`); a raised one closes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from safeguards.core.errors import InvalidAccountId
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    Event,
    LinkedEpisode,
    MemberLinked,
    Signal,
)
from safeguards.core.ids import aggregate_kind, derive_id, validate_caller_account_id
from safeguards.core.policy import Policy
from safeguards.core.policy_escalation import LINKED_MAX_LEVEL
from safeguards.core.prompt_links import forwarded_scores
from safeguards.core.state import AccountState

LINK_ENFORCED_RULE = "link.enforced"


def forwarded_signals(before: AccountState, signal: Signal, events: Sequence[Event],
                      after: AccountState, policy: Policy) -> list[Signal]:
    """Everything one decision sends to other histories through the outbox: scores to the
    prompts it linked, its links to their organisations and API keys, and an aggregate's
    enforcement to its members."""
    return [*forwarded_scores(signal, events), *member_links(signal, events),
            *enforced_members(before, signal, events, after, policy)]


def member_links(signal: Signal, events: Sequence[Event]) -> list[Signal]:
    """A ``MemberLinked`` to each organisation or API key the decision linked the account to."""
    return [
        signal.sent_on(derive_id("member", signal.signal_id, e.body.aggregate), e.body.aggregate,
                       MemberLinked(signal.account_id, e.body.link, e.body.request_id))
        for e in events
        if isinstance(e.body, AccountLinked) and e.body.link != "prompt"
    ]


def episode_change(state: AccountState, policy: Policy, caused_by: int) -> LinkedEpisode | None:
    """At the end of a decision in an aggregate's history (``state``: after its other events):
    the episode to open (at or above the policy's trigger with none open under that trigger:
    enforced anew, or a policy lowered the trigger under the level; or one open that a policy's
    larger ``linked_members`` would reach further: it opens again and tells the newest that
    many), or to close (one open, but a policy raised the trigger above the level); None where
    nothing changes, in an account's history, or where links start no account."""
    trigger = policy.linked_trigger_level
    m = state.membership
    if (state.level < trigger and not m.episode) or policy.linked_start_level == 0 \
            or aggregate_kind(state.account_id) is None:  # most decisions: the first test
        return None
    if state.level >= trigger:
        told = len(m.accounts) - m.untold  # the newest, told (or joined since)
        if m.episode and m.episode_trigger == trigger and (
                not m.untold or told >= policy.linked_members):
            return None
        return LinkedEpisode("opened", trigger, state.level, policy.linked_members, caused_by)
    if m.episode:
        return LinkedEpisode("closed", trigger, state.level, 0, caused_by)
    return None


def enforced_members(before: AccountState, signal: Signal, events: Sequence[Event],
                     after: AccountState, policy: Policy) -> list[Signal]:
    """In an aggregate's decision: an ``AggregateEnforced`` to its newest ``linked_members``
    members when the decision opened an episode, else (while one is open) to each member the
    decision added or moved to the newest (one the episode had not told). Members that are not
    valid account ids are never told (nothing can forward to them)."""
    m = after.membership
    if (policy.linked_start_level == 0 or not m.episode
            or after.level < policy.linked_trigger_level
            or aggregate_kind(after.account_id) is None):
        return []
    opened = any(isinstance(e.body, LinkedEpisode) and e.body.phase == "opened" for e in events)
    # opened: the newest it reaches (the older m.untold are told as their scores or links return)
    reached = m.accounts[m.untold:] if opened else m.added_since(before.membership)
    told = [a for a in reached if _reachable(a)]
    level = AggregateEnforced(after.account_id, after.level, after.level_rule, after.level_version)
    episode = str(m.episode)
    return [signal.sent_on(derive_id("linked", after.account_id, member, episode), member, level)
            for member in told]


def linked_start(state: AccountState, enforced: AggregateEnforced, policy: Policy
                 ) -> tuple[int, str, str] | None:
    """(level, rule, reason) at which an account told of an enforced aggregate starts; None
    when it stays where it is (already as high, links start nothing under this policy, the
    aggregate below the trigger, or the history is an aggregate's)."""
    target = min(policy.linked_start_level, policy.automatic_max_level, LINKED_MAX_LEVEL)
    if (target <= state.level or enforced.level < policy.linked_trigger_level
            or aggregate_kind(state.account_id) is not None):
        return None
    return (target, LINK_ENFORCED_RULE,
            f"linked to {enforced.aggregate}, which stands at L{enforced.level} "
            f"({enforced.rule_id}, its v{enforced.aggregate_version}); linked accounts start "
            f"at L{target}")


def _reachable(member: str) -> bool:
    try:
        validate_caller_account_id(member)
    except InvalidAccountId:
        return False
    return True
