"""The ext_proc route table: which requests the gate lets through Envoy, on which terms.

Deny by default: a request passes only on a route below, and every route is checked. Envoy hands
over the path as the client spelled it, and an origin server may take many spellings for one
path, so the path is normalised before it is matched (``normalise_path``), and a request that
matches is forwarded with the normalised path (what was checked is what the model serves):

- the query string (and a fragment, if one got this far) is not part of the path: it is kept
  as sent and not matched;
- percent-encoded unreserved characters (RFC 3986 2.3: letters, digits, ``-._~``) are decoded
  (``/v1/%6dessages``); other triplets stay encoded with upper-case hex, so an encoded slash
  (``%2F``) is not a separator and ``/v1%2Fmessages`` is an unknown path; a ``%`` that starts
  no triplet is written ``%25``;
- empty segments are dropped (``//v1///messages``, a trailing slash), ``.`` segments are
  removed and ``..`` removes the segment before it, never climbing above the root (RFC 3986
  5.2.4 with the root as a floor); the result always starts with ``/``;
- case is kept: Anthropic's paths are case-sensitive (``/V1/messages`` is a 404 there), so
  another case is another path, unknown here and denied; methods too (``post`` is not POST).

Routes (method, normalised path):

- ``POST /v1/messages``: ``messages``, the gate: identity, caller assertion, ``admit`` (rate
  limits, classification, interventions), completion checks, telemetry.
- ``POST /v1/messages/count_tokens``: ``count_tokens``; it generates nothing, so it passes as on
  the proxy: identity and caller assertion checked, a blocked account refused, no rate limit
  and no telemetry.
- ``GET /v1/models`` and ``GET /v1/models/{id}``: ``models``; identity and caller assertion
  checked, as on the proxy.

Anything else is refused at once in Anthropic's error shape, never passed through: a route's
path with another method is a 405 (``invalid_request_error``, with ``allow``), any other path a
404 (``not_found_error``). That includes ``/v1/messages/batches`` until each request of a batch
is checked, the legacy ``/v1/complete``, and ``/metrics``, ``/healthz`` and ``/readyz``, which
are served on the metrics port and never through Envoy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Route(StrEnum):
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    MODELS = "models"


# (normalised path, method) -> route; /v1/models/{id} is matched by _MODEL_PATH.
ROUTES: dict[str, tuple[str, Route]] = {
    "/v1/messages": ("POST", Route.MESSAGES),
    "/v1/messages/count_tokens": ("POST", Route.COUNT_TOKENS),
    "/v1/models": ("GET", Route.MODELS),
}
_MODEL_PATH = re.compile(r"/v1/models/[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # as on the proxy

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})?")


@dataclass(frozen=True, slots=True)
class Target:
    """A request on a route: ``path`` normalised, ``forward`` what goes upstream as ``:path``
    (None: the path as sent already is that)."""

    route: Route
    path: str
    forward: str | None


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 404 or 405
    reason: str  # the metrics label: not_found, method_not_allowed
    message: str
    allow: str | None = None  # the method the path takes (405)


def _percent(match: re.Match[str]) -> str:
    hex_digits = match.group(1)
    if hex_digits is None:
        return "%25"
    char = chr(int(hex_digits, 16))
    return char if char in _UNRESERVED else "%" + hex_digits.upper()


def split_target(raw: str) -> tuple[str, str]:
    """The path and the query (``?...`` as sent, or "") of a request target; a fragment is
    dropped (clients never send one; Envoy strips or refuses it)."""
    raw = raw.split("#", 1)[0]
    path, sep, query = raw.partition("?")
    return path, sep + query


def normalise_path(path: str) -> str:
    """The one spelling of ``path`` (no query string) that the route table matches."""
    segments: list[str] = []
    for segment in _PERCENT.sub(_percent, path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def match(method: str, raw_path: str) -> Target | Denied:
    """The route of a request (``raw_path``: Envoy's ``:path``, query string included)."""
    path, query = split_target(raw_path)
    normal = normalise_path(path)
    if normal in ROUTES:
        allowed, route = ROUTES[normal]
    elif _MODEL_PATH.fullmatch(normal):
        allowed, route = "GET", Route.MODELS
    else:
        return Denied(404, "not_found", "no such endpoint behind the safety gate")
    if method != allowed:
        return Denied(405, "method_not_allowed", f"use {allowed} for {normal}", allow=allowed)
    forward = normal + query
    return Target(route, normal, None if forward == raw_path else forward)
