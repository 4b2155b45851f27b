"""Upcasters: an event body stored at an older schema version, lifted to the current one.

Each ``upcast_<type>_vN_vM`` takes a body as it was written at version N and returns it as
version M would have written it; :data:`UPCASTERS` maps ``(type, N)`` to that step, and
:func:`upcast` chains the steps from a stored version to the type's ``SCHEMA_VERSION``. The
codec upcasts every body before it decodes it, so stored histories never need rewriting. A step
is a pure function of the body alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safeguards.core.errors import UnknownType, UnsupportedSchemaVersion
from safeguards.core.events import EVENT_TYPES
from safeguards.core.wire_fields import type_label

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def upcast_request_observed_v1_v2(body: dict[str, Any]) -> dict[str, Any]:
    """v1 predates ``surface``: every v1 request came through the HTTP proxy."""
    return {**body, "surface": "proxy"}


def upcast_request_observed_v2_v3(body: dict[str, Any]) -> dict[str, Any]:
    """v2 predates organisation, project and API-key ids: none were passed."""
    return body


def upcast_request_observed_v3_v4(body: dict[str, Any]) -> dict[str, Any]:
    """v3 predates prompt link keys: none was computed."""
    return body


def upcast_request_observed_v4_v5(body: dict[str, Any]) -> dict[str, Any]:
    """v4 predates the gate's fallback mark: none was recorded."""
    return body


def upcast_account_linked_v1_v2(body: dict[str, Any]) -> dict[str, Any]:
    """v1 predates prompt links: every link was an organisation's or an API key's."""
    return body


def upcast_score_recorded_v1_v2(body: dict[str, Any]) -> dict[str, Any]:
    """v1 predates organisation histories: every score was the account's own."""
    return body


def upcast_score_recorded_v2_v3(body: dict[str, Any]) -> dict[str, Any]:
    """v2 predates link keys on scores: none was carried. Written out (not left to the field's
    default) so that a store opening a sealed v2 body knows ``prompt_link`` was never sealed."""
    return {**body, "prompt_link": None}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("RequestObserved", 1): upcast_request_observed_v1_v2,
    ("RequestObserved", 2): upcast_request_observed_v2_v3,
    ("RequestObserved", 3): upcast_request_observed_v3_v4,
    ("RequestObserved", 4): upcast_request_observed_v4_v5,
    ("AccountLinked", 1): upcast_account_linked_v1_v2,
    ("ScoreRecorded", 1): upcast_score_recorded_v1_v2,
    ("ScoreRecorded", 2): upcast_score_recorded_v2_v3,
}


def upcast(type_name: str, schema_version: int, body: dict[str, Any]) -> dict[str, Any]:
    """``body``, stored at ``schema_version`` of ``type_name``, lifted one version at a time to
    the version this build decodes."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownType(f"unknown event type {type_label(type_name)}")
    current = cls.SCHEMA_VERSION
    if schema_version > current or schema_version < 1:
        raise UnsupportedSchemaVersion(
            f"{type_name} schema version {schema_version}; this build reads 1..{current}"
        )
    version = schema_version
    while version < current:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise UnsupportedSchemaVersion(
                f"{type_name} has no upcaster from schema version {version}"
            )
        body = step(body)
        version += 1
    return body


# --- snapshots: a state made by an earlier fold, carried to this one ----------------------------
# Snapshots of another fold version are rebuilt from events, never trusted; where the events are
# gone (a history truncated at an anchor, ``adapters/store/event_retention.py``) the anchor's
# snapshot has to be carried to the new fold instead. ``STATE_UPCASTERS[n]`` lifts a state map
# encoded by fold n to fold n + 1; a fold change that cannot be carried has no entry.

def upcast_state_fold6_fold7(state: dict[str, Any]) -> dict[str, Any]:
    """Fold 6 kept an aggregate's members as ``member_accounts`` (the newest 256); fold 7 keeps
    them in ``membership`` with the episode of its enforcement reaching them, which fold 6 never
    recorded: none is open, so the aggregate's next decision at or above the trigger opens one
    and tells its members (again)."""
    carried = {k: v for k, v in state.items() if k != "member_accounts"}
    carried["membership"] = {"accounts": state.get("member_accounts", []), "episode": 0,
                             "episode_trigger": 0, "untold": 0}
    return carried


STATE_UPCASTERS: dict[int, Upcaster] = {6: upcast_state_fold6_fold7}
# The first fold under which retention wrote bases (``event_retention``, at fold 6). Every fold
# from it to the one before ``FOLD_VERSION`` needs a step here, or the accounts whose base it made
# are unreadable after the deploy (quarantined, never folded from their kept events alone);
# ``tests/core/test_state_carry.py`` refuses a fold bump that adds none.
OLDEST_BASE_FOLD = 6


def upcast_state(fold_version: int, state: dict[str, Any], to: int) -> dict[str, Any] | None:
    """``state``, encoded by fold ``fold_version``, lifted to fold ``to``; None where no chain of
    upcasters reaches it."""
    while fold_version < to:
        step = STATE_UPCASTERS.get(fold_version)
        if step is None:
            return None
        state = step(state)
        fold_version += 1
    return state if fold_version == to else None
