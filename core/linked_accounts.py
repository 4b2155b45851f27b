"""Linked accounts start where the policy puts them: an aggregate's enforcement reaches its members.

An account linked to an aggregate (its organisation, an API key it shares, a harmful prompt it
sent: ``AccountLinked``) is a member of the aggregate's history, which learns of it through the
account's outbox: an organisation or API key from a ``MemberLinked`` signal
(:func:`member_links`), a prompt from the score forwarded to it (``core.prompt_links``); either
lands in the aggregate's ``member_accounts``. When the aggregate's own level reaches the policy's
``linked_trigger_level``, its outbox tells every member (``AggregateEnforced``,
:func:`enforced_members`), and tells each member that joins while it stays there. The member's
decision starts it at ``linked_start_level`` (:func:`linked_start`, rule ``link.enforced``): never
lowering its level, never past L3 (L4 and L5 stay with people and review).

Every forwarded signal's id derives from its causes (the member, the aggregate, the version of
the aggregate's level), so a decision replayed forwards the same signals and the receiving inbox
absorbs them; a member told twice of the same enforcement is already where it would start.
"""

from __future__ import annotations

from collections.abc import Sequence

from safeguards.core.errors import InvalidAccountId
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    EnforcementChanged,
    Event,
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


def enforced_members(before: AccountState, signal: Signal, events: Sequence[Event],
                     after: AccountState, policy: Policy) -> list[Signal]:
    """In an aggregate's decision: an ``AggregateEnforced`` to every member when its level
    crosses the policy's trigger level, else (while it stays at or above it) to each member the
    decision added. Members that are not valid account ids are never told (nothing can
    forward to them)."""
    trigger = policy.linked_trigger_level
    if (policy.linked_start_level == 0 or aggregate_kind(after.account_id) is None
            or after.level < trigger):
        return []
    crossed = any(isinstance(e.body, EnforcementChanged)
                  and e.body.previous_level < trigger <= e.body.level for e in events)
    known = set(before.member_accounts)
    told = after.member_accounts if crossed else tuple(
        m for m in after.member_accounts if m not in known)
    level = AggregateEnforced(after.account_id, after.level, after.level_rule, after.level_version)
    return [
        signal.sent_on(derive_id("linked", after.account_id, member, str(after.level_version)),
                       member, level)
        for member in told
        if _reachable(member)
    ]


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
