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


def upcast_account_linked_v1_v2(body: dict[str, Any]) -> dict[str, Any]:
    """v1 predates prompt links: every link was an organisation's or an API key's."""
    return body


def upcast_score_recorded_v1_v2(body: dict[str, Any]) -> dict[str, Any]:
    """v1 predates organisation histories: every score was the account's own."""
    return body


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("RequestObserved", 1): upcast_request_observed_v1_v2,
    ("RequestObserved", 2): upcast_request_observed_v2_v3,
    ("RequestObserved", 3): upcast_request_observed_v3_v4,
    ("AccountLinked", 1): upcast_account_linked_v1_v2,
    ("ScoreRecorded", 1): upcast_score_recorded_v1_v2,
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
