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

- ``POST /model/{modelId}/invoke`` and ``/model/{modelId}/invoke-with-response-stream``:
  ``bedrock_invoke``, Amazon Bedrock's shape (``bedrock_api``), gated like ``/v1/messages``;
  the model id is one segment (``%2F`` where an ARN holds a slash).
- ``POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}``
  ``:rawPredict``
  and ``:streamRawPredict``: ``vertex_predict``, Google Vertex AI's shape (``vertex_api``), gated
  like ``/v1/messages``; ``models/count-tokens:rawPredict`` is Vertex's ``count_tokens``.
- ``/v1/messages/batches`` (``POST`` create, ``GET`` list), ``/v1/messages/batches/{id}`` (``GET``,
  ``DELETE``), ``.../{id}/cancel`` (``POST``), ``.../{id}/results`` (``GET``): with
  ``batches=True``, each request of a batch admitted and each result checked (``batches``).
- ``POST /model-invocation-job`` (Bedrock's ``CreateModelInvocationJob``): with ``batches=True``,
  ``job_create``, each record of the job's input file checked (``provider_batch_jobs``);
  ``GET /model-invocation-jobs``, ``GET /model-invocation-job/{id}`` and ``POST .../{id}/stop``:
  ``job_read``, identity checked and a blocked account refused. Google Vertex AI's batch
  prediction jobs alike: ``POST .../locations/{location}/batchPredictionJobs`` is
  ``job_create``; ``GET`` of it (list), ``GET``/``DELETE .../batchPredictionJobs/{id}`` and
  ``POST .../{id}:cancel`` are ``job_read`` (the path's project checked as for rawPredict).

Anything else is refused at once in Anthropic's error shape, never passed through: a route's
path with another method is a 405 (``invalid_request_error``, with ``allow``), any other path a
404 (``not_found_error``). That includes the legacy ``/v1/complete``, and ``/metrics``,
``/healthz`` and ``/readyz``, which are served on the metrics port and never through Envoy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.provider_api import MESSAGES_CALL, ProviderApi, ProviderCall
from safeguards.adapters.csp.vertex_api import VERTEX_API

JOB_CALL = ProviderCall(BEDROCK_API)  # a Bedrock batch job's routes (their errors: Bedrock's)


class Route(StrEnum):
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    MODELS = "models"
    BEDROCK_INVOKE = "bedrock_invoke"
    VERTEX_PREDICT = "vertex_predict"
    BATCH_CREATE = "batch_create"  # each request in it checked (``batches``)
    BATCH_RESULTS = "batch_results"  # each result observed and checked (``batches``)
    BATCH_READ = "batch_read"  # list, retrieve, cancel, delete: identity checked
    JOB_CREATE = "job_create"  # a provider's batch job: each record of its file checked
    JOB_READ = "job_read"  # a provider's batch jobs listed, retrieved, stopped

    @property
    def generates(self) -> bool:
        """A route to the model: gated (admission, completion checks, telemetry)."""
        return self in _GENERATING


# (normalised path, method) -> route; /v1/models/{id} is matched by _MODEL_PATH.
ROUTES: dict[str, tuple[str, Route]] = {
    "/v1/messages": ("POST", Route.MESSAGES),
    "/v1/messages/count_tokens": ("POST", Route.COUNT_TOKENS),
    "/v1/models": ("GET", Route.MODELS),
}
_GENERATING = frozenset((Route.MESSAGES, Route.BEDROCK_INVOKE, Route.VERTEX_PREDICT))
_BEDROCK_PATH = re.compile(r"/model/([^/]{1,512})/(invoke|invoke-with-response-stream)")
_BEDROCK_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}")  # ids, profiles, ARNs
_VERTEX_PATH = re.compile(
    r"/v1/projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/locations/([a-z][a-z0-9-]{0,62})"
    r"/publishers/anthropic/models/([^/:]{1,256}):(rawPredict|streamRawPredict)")
_VERTEX_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_BATCH_PATH = re.compile(
    r"/v1/messages/batches(?:/(msgbatch_[A-Za-z0-9]{1,64})(/results|/cancel)?)?")
_JOB_PATH = re.compile(r"/model-invocation-job(s|/[^/]{1,1011}(/stop)?)?")
_VERTEX_JOB_PATH = re.compile(
    r"/v1/projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/locations/([a-z][a-z0-9-]{0,62})"
    r"/batchPredictionJobs(?:/([0-9]{1,32})(:cancel)?)?")
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
    call: ProviderCall = MESSAGES_CALL


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 404 or 405
    reason: str  # the metrics label: not_found, method_not_allowed
    message: str
    allow: str | None = None  # the method the path takes (405)
    api: ProviderApi = MESSAGES_CALL.api  # whose error shape the refusal takes


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


@functools.lru_cache(maxsize=4096)
def match(method: str, raw_path: str, *, batches: bool = False) -> Target | Denied:
    """The route of a request (``raw_path``: Envoy's ``:path``, query string included); with
    ``batches``, the Message Batches routes too (``batches``: each request and result checked).
    Answers are immutable and cached by their arguments: a serving path sends few spellings."""
    path, query = split_target(raw_path)
    normal = normalise_path(path)
    call = MESSAGES_CALL
    batch = _BATCH_PATH.fullmatch(normal) if batches else None
    job = _job_route(method, normal) if batches and batch is None else None
    if batch is not None:
        allowed, route = _batch_route(method, batch)
    elif job is not None:  # Bedrock's and Vertex's batch jobs, in their error shapes
        allowed, route, call = job
    elif normal in ROUTES:
        allowed, route = ROUTES[normal]
    elif _MODEL_PATH.fullmatch(normal):
        allowed, route = "GET", Route.MODELS
    elif normal.startswith("/model/"):
        found = _provider_call(normal)
        if isinstance(found, Denied):
            return found
        allowed, route, call = "POST", Route.BEDROCK_INVOKE, found
    elif normal.startswith("/v1/projects/"):
        found = _provider_call(normal)
        if isinstance(found, Denied):
            return found
        allowed, call = "POST", found
        route = Route.COUNT_TOKENS if call.model is None else Route.VERTEX_PREDICT
    else:
        return Denied(404, "not_found", "no such endpoint behind the safety gate")
    if method != allowed:
        return Denied(405, "method_not_allowed", f"use {allowed} for {normal}", allow=allowed,
                      api=call.api)
    forward = normal + query
    return Target(route, normal, None if forward == raw_path else forward, call)


def _batch_route(method: str, found: re.Match[str]) -> tuple[str, Route]:
    """The method a batch path takes (list or create; retrieve or delete; results; cancel)."""
    batch_id, tail = found.group(1), found.group(2)
    if batch_id is None:
        return ("GET", Route.BATCH_READ) if method == "GET" else ("POST", Route.BATCH_CREATE)
    if tail == "/results":
        return "GET", Route.BATCH_RESULTS
    if tail == "/cancel":
        return "POST", Route.BATCH_READ
    return ("DELETE", Route.BATCH_READ) if method == "DELETE" else ("GET", Route.BATCH_READ)


def _job_route(method: str, normal: str) -> tuple[str, Route, ProviderCall] | None:
    """A provider's batch job route: the method it takes, the route and the provider."""
    bedrock = _JOB_PATH.fullmatch(normal)
    if bedrock is not None:
        listed, stop = bedrock.group(1), bedrock.group(2)
        return ("GET" if listed and not stop else "POST",
                Route.JOB_READ if listed else Route.JOB_CREATE, JOB_CALL)
    vertex = _VERTEX_JOB_PATH.fullmatch(normal)
    if vertex is None:
        return None
    call = ProviderCall(VERTEX_API, project=vertex.group(1))
    if vertex.group(3) is None:  # list or create
        return ("GET", Route.JOB_READ, call) if method == "GET" else ("POST", Route.JOB_CREATE,
                                                                      call)
    if vertex.group(4):  # :cancel
        return "POST", Route.JOB_READ, call
    return ("DELETE" if method == "DELETE" else "GET"), Route.JOB_READ, call


def _provider_call(normal: str) -> ProviderCall | Denied:
    """Bedrock's or Vertex's call on a normalised path (a Vertex call without a model: its
    count-tokens operation)."""
    if normal.startswith("/model/"):
        found = _BEDROCK_PATH.fullmatch(normal)
        model = unquote(found.group(1)) if found else ""
        if found is None or not _BEDROCK_MODEL.fullmatch(model):
            return Denied(404, "not_found", "no such model or operation behind the safety gate",
                          api=BEDROCK_API)
        return ProviderCall(BEDROCK_API, model, found.group(2) != "invoke")
    vertex = _VERTEX_PATH.fullmatch(normal)
    model = unquote(vertex.group(3)) if vertex else ""
    if vertex is None or not _VERTEX_MODEL.fullmatch(model):
        return Denied(404, "not_found", "no such model or operation behind the safety gate",
                      api=VERTEX_API)
    if model == "count-tokens":
        if vertex.group(4) != "rawPredict":
            return Denied(404, "not_found", "no such operation behind the safety gate",
                          api=VERTEX_API)
        return ProviderCall(VERTEX_API, None, False, vertex.group(1))
    return ProviderCall(VERTEX_API, model, vertex.group(4) == "streamRawPredict",
                        vertex.group(1))
