"""Erasure by crypto-shredding: which fields of an event are personal, and what is left of them
once the account's data key is destroyed.

A store seals an event's personal fields (the values below, where set) under the account's data
key before the event is chained, and keeps the rest of the body in the clear: scores, categories,
levels, rules, versions and times are what folds, backtests and explanations run on, and none of
them identifies anyone. ``safeguards ops erase`` destroys the key and appends
:class:`AccountErased`; from then on the sealed fields of the events before it read as erased
(:func:`erased_fields`), the chain still verifies (it covers the sealed bytes), and the account id,
the stream's key, stays.

Personal, per event type (the README's residency section lists them with the reasons):

- ``RequestObserved``: ``prompt_sha256`` (a digest of the prompt: short prompts can be guessed),
  ``organization_id``, ``project_id``, ``api_key_fingerprint``, ``prompt_link``;
- ``ScoreRecorded``: ``content_sha256``, ``prompt_link`` (a prompt's score, from schema 3);
- ``AccountLinked`` / ``AggregateEnforced``: ``aggregate`` (it names the organisation, key or
  prompt link);
- operator free text: ``reason`` of ``OperatorActionTaken``, ``ApprovalRequested``,
  ``ApprovalGranted``, ``ReviewClaimed``, ``AppealResolved``; ``AppealFiled``'s ``reason`` and
  ``filed_by``; and the ``reason`` of an ``EnforcementChanged`` an operator's action made (rule
  ``operator.*``, whose reason quotes the operator's), where automatic reasons say only which
  score crossed which threshold.

Erased values: an optional field reads as None (as if the caller had passed none); a digest reads
as ``[erased]`` plus the event id, so that two erased contents never count as the same content
(a backtest would otherwise merge distinct strikes); any other text reads as ``[erased]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

ERASED = "[erased]"
SEALED_KEY = "~s"  # the stored body's entry holding its sealed personal fields

PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "RequestObserved": ("prompt_sha256", "organization_id", "project_id", "api_key_fingerprint",
                        "prompt_link"),
    "ScoreRecorded": ("content_sha256", "prompt_link"),
    "AccountLinked": ("aggregate",),
    "AggregateEnforced": ("aggregate",),
    "OperatorActionTaken": ("reason",),
    "ApprovalRequested": ("reason",),
    "ApprovalGranted": ("reason",),
    "ReviewClaimed": ("reason",),
    "AppealFiled": ("filed_by", "reason"),
    "AppealResolved": ("reason",),
    "EnforcementChanged": ("reason",),  # only where an operator's action made it
}
_DIGESTS = frozenset({"prompt_sha256", "content_sha256"})
_OPTIONAL = frozenset({"organization_id", "project_id", "api_key_fingerprint", "prompt_link"})
OPERATOR_RULE_PREFIX = "operator."


@dataclass(frozen=True, slots=True)
class AccountErased:
    """The tombstone of an erasure: an operator destroyed the account's data key, so the
    personal fields of its events up to ``erased_through`` are gone for good (``keys_destroyed``
    says how many keys there were: 0 when none of its events had any). Changes no state."""

    TYPE: ClassVar[str] = "AccountErased"
    SCHEMA_VERSION: ClassVar[int] = 1
    OBSERVATION: ClassVar[bool] = False

    operator: str
    erased_through: int
    keys_destroyed: int


def personal_fields(type_name: str, body: dict[str, Any]) -> tuple[str, ...]:
    """The fields of an encoded body (the codec's map) to seal: its type's personal fields
    that hold a value."""
    names = PERSONAL_FIELDS.get(type_name)
    if names is None:
        return ()
    if type_name == "EnforcementChanged" and not str(body.get("rule_id", "")).startswith(
            OPERATOR_RULE_PREFIX):
        return ()
    return tuple(n for n in names if body.get(n) is not None)


def seal_label(type_name: str, names: tuple[str, ...]) -> str:
    """What a sealed blob is bound to besides the account (its associated data): the event type
    and the field names, so a blob never opens as another type's or another field set's."""
    return type_name + ":" + ",".join(names)


def erased_fields(type_name: str, body: dict[str, Any], event_id: str) -> dict[str, Any]:
    """``body`` (an encoded map whose sealed fields are gone with the key) with each personal
    field it lacks set to its erased value."""
    out = dict(body)
    for name in PERSONAL_FIELDS.get(type_name, ()):
        if name in out:
            continue
        if name in _OPTIONAL:
            out[name] = None
        elif name in _DIGESTS:
            out[name] = f"{ERASED}{event_id}"
        else:
            out[name] = ERASED
    return out


def is_erased(value: object) -> bool:
    return isinstance(value, str) and value.startswith(ERASED)


def erased_names(body: object) -> tuple[str, ...]:
    """The personal fields of a decoded body that read as erased (for explanations)."""
    if not dataclasses.is_dataclass(body):
        return ()
    names = PERSONAL_FIELDS.get(getattr(body, "TYPE", ""), ())
    return tuple(n for n in names if is_erased(getattr(body, n, None)))


def scrub_state(state: Any) -> Any:
    """An account state (``core.state.AccountState``) without its personal values: what stands
    for a truncated history once the account is erased (``event_retention``). Content digests
    become distinct erased marks (their count still dedupes nothing new), links and prompt
    keys go (a later request naming an organisation links again), an operator's reason goes."""
    operator_set = str(getattr(state, "level_rule", "")).startswith(OPERATOR_RULE_PREFIX)
    return dataclasses.replace(
        state, recent_content=tuple(f"{ERASED}{i}" for i in range(len(state.recent_content))),
        links=(), recent_prompts=(), level_reason=ERASED if operator_set else state.level_reason)
