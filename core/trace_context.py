"""W3C trace context (``traceparent``) as plain functions: read defensively, written cheaply.

A ``traceparent`` header arrives from peers that may be hostile (any publisher on a subject, a
client of the proxy), so reading it never raises: a value that is not exactly
``00-<32 hex>-<16 hex>-<2 hex>`` (lower case, non-zero ids, at most 55 characters) is *malformed*,
which the caller counts and answers by starting a new trace. Future versions (``01``..``fe``) are
read by their first four fields, as the recommendation asks; ``ff`` is invalid. ``tracestate`` is
never read: nothing here needs vendor state, and it is an unbounded hostile input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

TRACEPARENT = "traceparent"
_HEX = frozenset("0123456789abcdef")
_MAX_LENGTH = 256  # a later version may append fields; nothing longer is read at all


class TraceParent(NamedTuple):
    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(value: str) -> TraceParent | None:
    """The parent a ``traceparent`` value names, or None when it is malformed."""
    if len(value) < 55 or len(value) > _MAX_LENGTH:
        return None
    version, trace_hex, span_hex, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if version == "00":
        if len(value) != 55:
            return None
    elif version == "ff" or (len(value) > 55 and value[55] != "-"):
        return None
    if not _HEX.issuperset(version) or not _HEX.issuperset(trace_hex) \
            or not _HEX.issuperset(span_hex) or not _HEX.issuperset(flags):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1))


def read_traceparent(headers: Mapping[str, str] | None) -> tuple[TraceParent | None, bool]:
    """(the parent, malformed): (None, False) when the headers carry no ``traceparent``."""
    if not headers:
        return None, False
    value = headers.get(TRACEPARENT)
    if value is None:
        return None, False
    if not isinstance(value, str):
        return None, True
    parent = parse_traceparent(value)
    return parent, parent is None


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
