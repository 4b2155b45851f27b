"""Enforcement commands: what the actors tell the inline adapters about one account.

A command carries everything the inline gate needs (level, rate limits, interventions, expiry),
so the gate never needs the policy to apply it. Adapters apply a command only if its ``version``
is newer than what they hold, which makes replays and reordering harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from safeguards.core.events import EnforcementChanged, Event
from safeguards.core.ids import aggregate_kind, derive_id
from safeguards.core.policy import Policy

# What a prompt's command carries from the policy's ``prompt_refuse_level`` on: the gates refuse
# every request whose newest user turn is that prompt.
PROMPT_REFUSED = ("block",)
LEVEL_NAMES = ("monitor", "warn", "enhanced_filtering", "throttle", "suspend_pending_review",
               "terminated")


@dataclass(frozen=True, slots=True)
class EnforcementCommand:
    command_id: str
    account_id: str
    region: str
    level: int
    requests_per_minute: int
    tokens_per_minute: int
    interventions: tuple[str, ...]
    expires_at: datetime | None
    version: int  # the account version of the EnforcementChanged event behind it
    policy_version: str
    reason: str
    issued_at: datetime

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level]


def command_for(event: Event, policy: Policy) -> EnforcementCommand | None:
    """The command an ``EnforcementChanged`` event sends to the adapters; None for other events."""
    body = event.body
    if not isinstance(body, EnforcementChanged):
        return None
    tier = policy.rate_tiers[body.level]
    interventions = policy.ladder[body.level].interventions
    if (policy.prompt_refuse_level is not None and body.level >= policy.prompt_refuse_level
            and aggregate_kind(event.account_id) == "prompt"):
        interventions = PROMPT_REFUSED  # the same harmful prompt from too many accounts
    return EnforcementCommand(
        command_id=derive_id("enforce", event.account_id, str(event.version)),
        account_id=event.account_id,
        region=event.region,
        level=body.level,
        requests_per_minute=tier.requests_per_minute,
        tokens_per_minute=tier.tokens_per_minute,
        interventions=interventions,
        expires_at=body.expires_at,
        version=event.version,
        policy_version=event.policy_version or policy.version,
        reason=body.reason,
        issued_at=event.occurred_at,
    )


def commands_for(events: list[Event], policy: Policy) -> list[EnforcementCommand]:
    return [c for c in (command_for(e, policy) for e in events) if c is not None]
