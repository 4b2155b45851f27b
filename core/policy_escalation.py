"""The policy's ``[escalation]`` section: how far and how fast levels climb on their own, and
what aggregates (organisations, API keys, prompts) do to the accounts linked to them."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from safeguards.core.aggregate_members import MAX_MEMBERS
from safeguards.core.policy_document import DocumentChecker
from safeguards.core.state import RECENT_CONTENT

LEVELS = range(6)  # L0 monitor .. L5 terminated
# The highest level a link may start an account at: L4 and L5 come from people (or from a
# severe category's own evidence), never from another history's enforcement.
LINKED_MAX_LEVEL = 3
# How many of an aggregate's newest members its enforcement tells at once where a policy does not
# say (``linked_members``, at most the MAX_MEMBERS its history remembers).
DEFAULT_LINKED_MEMBERS = 256
SETTINGS = frozenset({"recidivism_factor", "automatic_max_level", "aggregate_evidence",
                      "two_person_set_level", "two_person_lower_from", "prompt_refuse_level",
                      "prompt_refuse_accounts", "linked_start_level", "linked_trigger_level",
                      "linked_members"})


class EscalationSettings(TypedDict):
    recidivism_factor: float
    automatic_max_level: int
    aggregate_evidence: Literal["threshold", "refuse_threshold"]
    two_person_set_level: int | None
    two_person_lower_from: int | None
    prompt_refuse_level: int | None
    prompt_refuse_accounts: int
    linked_start_level: int
    linked_trigger_level: int
    linked_members: int


def escalation_settings(c: DocumentChecker, esc: dict[str, Any]) -> EscalationSettings:
    """The section's settings, each problem recorded in ``c`` (its default in its place)."""
    recidivism = c.number(esc, "recidivism_factor", "escalation", lo=0, hi=10, default=0.0)
    automatic_max = c.get(esc, "automatic_max_level", int, "escalation", 3)
    if automatic_max is None or automatic_max not in LEVELS:
        if automatic_max is not None:
            c.problems.append(f"escalation.automatic_max_level: {automatic_max} is not a level "
                              "0 to 5")
        automatic_max = 3
    evidence = c.get(esc, "aggregate_evidence", str, "escalation", "refuse_threshold")
    if evidence not in ("threshold", "refuse_threshold"):
        c.problems.append(f"escalation.aggregate_evidence: {evidence!r} is not \"threshold\" "
                          "or \"refuse_threshold\"")
    optional_levels: dict[str, int | None] = {}
    for key in ("two_person_set_level", "two_person_lower_from", "prompt_refuse_level"):
        level = c.get(esc, key, int, "escalation", None)
        if level is not None and level not in LEVELS:
            c.problems.append(f"escalation.{key}: {level} is not a level 0 to 5")
        elif level == 0 and key == "prompt_refuse_level":
            c.problems.append(f"escalation.{key}: 0 would refuse every prompt ever flagged")
        optional_levels[key] = level
    prompt_accounts = c.get(esc, "prompt_refuse_accounts", int, "escalation", 1)
    if prompt_accounts is None or not 1 <= prompt_accounts <= RECENT_CONTENT:
        if prompt_accounts is not None:
            c.problems.append(f"escalation.prompt_refuse_accounts: {prompt_accounts} is outside "
                              f"[1, {RECENT_CONTENT}] (the accounts a prompt's history remembers)")
        prompt_accounts = 1
    start, trigger = _linked_levels(c, esc, automatic_max)
    members = c.get(esc, "linked_members", int, "escalation", DEFAULT_LINKED_MEMBERS)
    if members is None or not 1 <= members <= MAX_MEMBERS:
        if members is not None:
            c.problems.append(f"escalation.linked_members: {members} is outside [1, {MAX_MEMBERS}] "
                              "(the members an aggregate's history remembers)")
        members = DEFAULT_LINKED_MEMBERS
    for key in esc:
        if key not in SETTINGS:
            c.problems.append(f"escalation.{key}: unknown setting")
    return EscalationSettings(
        recidivism_factor=recidivism,
        automatic_max_level=automatic_max,
        aggregate_evidence="threshold" if evidence == "threshold" else "refuse_threshold",
        two_person_set_level=optional_levels["two_person_set_level"],
        two_person_lower_from=optional_levels["two_person_lower_from"],
        prompt_refuse_level=optional_levels["prompt_refuse_level"],
        prompt_refuse_accounts=prompt_accounts,
        linked_start_level=start,
        linked_trigger_level=trigger,
        linked_members=members,
    )


def _linked_levels(c: DocumentChecker, esc: dict[str, Any], automatic_max: int
                   ) -> tuple[int, int]:
    """``linked_start_level`` (0: links start no account anywhere) and ``linked_trigger_level``
    (the aggregate's level from which its members start there)."""
    start = c.get(esc, "linked_start_level", int, "escalation", 0)
    cap = min(LINKED_MAX_LEVEL, automatic_max)
    if start is None or not 0 <= start <= cap:
        if start is not None:
            c.problems.append(
                f"escalation.linked_start_level: {start} is outside [0, {cap}] (a link starts an "
                f"account at most at L{LINKED_MAX_LEVEL} and within automatic_max_level: L4 and "
                "L5 come from people)")
        start = 0
    trigger = c.get(esc, "linked_trigger_level", int, "escalation", 2)
    if trigger is None or not 1 <= trigger <= max(LEVELS):
        if trigger is not None:
            c.problems.append(f"escalation.linked_trigger_level: {trigger} is not a level 1 to 5")
        trigger = 2
    return start, trigger
