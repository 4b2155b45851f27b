"""Message Batches through the gate: each request of a batch is checked like a single request,
and each result observed like one.

Creation (``POST /v1/messages/batches``): every request's ``params`` is admitted as a single
request would be (``Admission.admit``: enforcement, screening or classification; the signal's
surface is ``proxy/batch``), except that the creation is one call against the account's request
rate (its first request's check: over the rate, the whole creation is throttled; the requests
run upstream on the batch's own quota, and their tokens are charged as their results are
observed). A refused request is withheld from the batch the
upstream sees and its result is the error a single request got (an ``errored`` result, spliced
into the results); an intervened one carries the safety system prompt; if every request is
refused, the creation is refused as its first request was.

Results (``GET /v1/messages/batches/{id}/results``): each request is observed once, the first
time its batch's results pass (tokens charged, the signal and the content queued); where its
account's level ends streams (or ``classify_all_streams``), each completion is scored and one
that crosses is replaced by a refusal (``stop_reason: "refusal"``, no content), on every read.
A blocked account may not read results.

The gate keeps each batch's admitted requests in memory until its results are read
(``capacity`` batches and ``max_held_chars`` of prompt text, the oldest forgotten first, counted
in ``forgotten``): results of a batch it does not know (a restart,
another worker, forgotten) pass with each completion checked by the caller's standing now,
counted in ``unobserved_results``. Batch objects (create, retrieve, list) are answered with
``results_url`` pointing at this proxy, so that clients fetch results through the gate.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import SpanContext

from safeguards.adapters import tracing
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.answers import Receive, Scope, Send, respond, send_failure
from safeguards.adapters.csp.decision import (
    BLOCK,
    TERMINATE_ACTION,
    TERMINATE_STREAM,
    THROTTLE_ACTION,
    Decision,
    GateRequest,
    refusal,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.messages_api import (
    completion_of,
    error_body,
    refusal_message,
    with_safety_prompt,
)
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.provider_api import (
    MESSAGES_API,
    UPSTREAM_FAILURES,
    MessagesApi,
    ProviderApi,
    ProviderCall,
)
from safeguards.adapters.csp.routes import Route, Target
from safeguards.adapters.csp.upstream_batches import batch_requests
from safeguards.adapters.csp.upstream_client import (
    UpstreamClient,
    UpstreamResponse,
)


class BatchItemApi(MessagesApi):
    """A request inside a batch: a Messages body (the signal's surface says ``batch``)."""

    name = "batch"


BATCH_CALL = ProviderCall(BatchItemApi())


@dataclass(slots=True)
class _Admitted:
    request: GateRequest
    decision: Decision
    prompt: str
    trace: SpanContext | None = None  # its admission's span (tracing on): its result's parent


@dataclass(slots=True)
class BatchEntry:
    admitted: dict[str, _Admitted]
    refused: dict[str, dict[str, Any]]  # custom_id -> the errored result it gets
    observed: bool = False
    withheld: set[str] = field(default_factory=set)  # completions replaced by refusals

    @property
    def held_chars(self) -> int:
        """The prompt text it holds until its results are read (what the ledger bounds)."""
        return 0 if self.observed else sum(len(a.prompt) for a in self.admitted.values())


@dataclass(slots=True)
class Submission:
    body: bytes | None  # the batch the upstream sees (None: every request was refused)
    entry: BatchEntry
    first_refusal: Decision | None


class BatchGate:
    def __init__(self, admission: Admission, gate: Gate, metrics: CspMetrics, *,
                 classify_all_streams: bool = False, capacity: int = 1000,
                 max_held_chars: int = 64 * 1024 * 1024) -> None:
        self.admission = admission
        self.gate = gate
        self.metrics = metrics
        self.classify_all_streams = classify_all_streams
        self.capacity = capacity
        self.max_held_chars = max_held_chars
        self._ledger: OrderedDict[str, BatchEntry] = OrderedDict()
        self.held_chars = 0
        self.forgotten = 0
        self.unobserved_results = 0

    async def submit(self, caller: Caller, body: bytes) -> Submission:
        admitted: dict[str, _Admitted] = {}
        refused: dict[str, dict[str, Any]] = {}
        forward: list[dict[str, Any]] = []
        first_refusal: Decision | None = None
        for n, (custom_id, params) in enumerate(batch_requests(body)):
            with tracing.batch_item(tracing.BATCH_REQUEST_SPAN):
                # The creation is one call against the account's request rate (its first
                # request's check); over the rate, the whole batch is refused as that call.
                item = await self.admission.admit(caller, json.dumps(params).encode(), "proxy",
                                                  BATCH_CALL, rated=n == 0)
                decision = item.decision
                if decision.refused:
                    message, _ = refusal(decision)
                    refused[custom_id] = {"type": "errored", "error": json.loads(
                        error_body(decision.status, message))}
                    self.admission.observe(item.request, decision.action, 0, 0, item.prompt, "")
                    first_refusal = first_refusal or decision
                    if n == 0 and decision.action == THROTTLE_ACTION:  # the creation itself
                        return Submission(None, BatchEntry({}, refused), decision)
                    continue
                context = tracing.current_context()
            if decision.safety_prompt:
                params = with_safety_prompt(params)
            admitted[custom_id] = _Admitted(item.request, decision, item.prompt, context)
            forward.append({"custom_id": custom_id, "params": params})
        body_out = json.dumps({"requests": forward}).encode() if forward else None
        return Submission(body_out, BatchEntry(admitted, refused), first_refusal)

    def remember(self, batch_id: str, entry: BatchEntry) -> None:
        self._ledger[batch_id] = entry
        self.held_chars += entry.held_chars
        while len(self._ledger) > self.capacity or (
                self.held_chars > self.max_held_chars and len(self._ledger) > 1):
            _, oldest = self._ledger.popitem(last=False)
            self.held_chars -= oldest.held_chars
            self.forgotten += 1

    def known(self, batch_id: str) -> bool:
        return batch_id in self._ledger

    async def results(self, batch_id: str, caller: Caller, body: bytes) -> bytes:
        """The results as the client gets them: checked, observed once, refusals spliced in."""
        entry = self._ledger.get(batch_id)
        standing = self.gate.peek(caller.account, gate_now(), caller.aggregates)
        out: list[bytes] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                self.metrics.upstream_errors.labels("bad_json").inc()
                continue  # a malformed line is not a result: never passed on unchecked
            if not isinstance(doc, dict) or not isinstance(doc.get("result"), dict):
                self.metrics.upstream_errors.labels("bad_json").inc()
                continue
            custom_id = str(doc.get("custom_id"))
            if entry is None:
                await self._unknown(batch_id, custom_id, doc, caller, standing)
            else:
                await self._known(entry, custom_id, doc)
            out.append(json.dumps(doc).encode())
        if entry is not None:
            out += (json.dumps({"custom_id": custom_id, "result": result}).encode()
                    for custom_id, result in entry.refused.items())
            self.held_chars -= entry.held_chars
            entry.observed = True
            for item in entry.admitted.values():
                item.prompt = ""  # observed: the text is on the content stream, not kept here
        return b"".join(line + b"\n" for line in out)

    async def _known(self, entry: BatchEntry, custom_id: str, doc: dict[str, Any]) -> None:
        item = entry.admitted.get(custom_id)
        result = doc["result"]
        message = result.get("message") if result.get("type") == "succeeded" else None
        completion, tokens_in, tokens_out = completion_of(message)
        if item is None:
            self.unobserved_results += 1  # a custom_id the batch did not have: checked alone
            return
        if entry.observed:  # read before: checked and observed then
            if custom_id in entry.withheld and isinstance(message, dict):
                result["message"] = refusal_message(message)
            return
        with tracing.batch_item(tracing.BATCH_RESULT_SPAN, item.trace):
            action = item.decision.action
            if completion and (item.decision.classify_stream or self.classify_all_streams):
                verdict = await self.admission.completion_verdict(item.request, completion)
                if verdict is not None:
                    entry.withheld.add(custom_id)
                    self.gate.count_terminated(item.decision.level, verdict)
                    self.metrics.streams_terminated.labels(verdict).inc()
            if custom_id in entry.withheld and isinstance(message, dict):
                result["message"] = refusal_message(message)
                action = TERMINATE_ACTION
            self.admission.observe(item.request, action, tokens_in, tokens_out, item.prompt,
                                   completion)

    async def _unknown(self, batch_id: str, custom_id: str, doc: dict[str, Any],
                       caller: Caller, standing: Decision) -> None:
        self.unobserved_results += 1
        result = doc["result"]
        message = result.get("message") if result.get("type") == "succeeded" else None
        completion, _, _ = completion_of(message)
        if completion and isinstance(message, dict) and (
                standing.flags & TERMINATE_STREAM or self.classify_all_streams):
            request = GateRequest(caller.account, f"{batch_id}/{custom_id}"[:128],
                                  surface="proxy/batch")
            verdict = await self.admission.completion_verdict(request, completion)
            if verdict is not None:
                self.gate.count_terminated(standing.level, verdict)
                self.metrics.streams_terminated.labels(verdict).inc()
                result["message"] = refusal_message(message)


def with_results_url(body: bytes, base_url: str) -> bytes:
    """A batch object (or a list of them) with ``results_url`` on this proxy."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(doc, dict):
        return body
    listed = doc.get("data")
    batches: list[Any] = listed if isinstance(listed, list) else [doc]
    for batch in batches:
        if isinstance(batch, dict) and isinstance(batch.get("id"), str) and batch.get(
                "results_url"):
            batch["results_url"] = f"{base_url}/v1/messages/batches/{batch['id']}/results"
    return json.dumps(doc).encode()


class BatchProxy(Protocol):
    """What the batch routes use of the HTTP proxy (``proxy.CspProxy``)."""

    batches: BatchGate
    gate: Gate
    metrics: CspMetrics

    @property
    def upstream_client(self) -> UpstreamClient: ...
    async def _caller_and_body(self, scope: Scope, receive: Receive
                               ) -> tuple[Caller, bytes | None, list[tuple[bytes, bytes]]]: ...
    async def _upstream(self, send: Send, call: Awaitable[UpstreamResponse],
                        api: ProviderApi = ...) -> UpstreamResponse | None: ...
    async def _refuse(self, send: Send, decision: Decision, api: ProviderApi = ...) -> None: ...
    async def refused_by_standing(self, send: Send, caller: Caller, api: ProviderApi
                                  ) -> bool: ...
    async def _upstream_answer(self, send: Send, response: UpstreamResponse,
                               api: ProviderApi = ...) -> bytes | None: ...


async def serve_batch(proxy: BatchProxy, scope: Scope, receive: Receive, send: Send,
                      target: Target) -> None:
    """``/v1/messages/batches`` and below, on the HTTP proxy."""
    caller, body, forward = await proxy._caller_and_body(scope, receive)
    if body is None:
        return  # the client went away
    route, method = target.route, scope["method"]
    submission = None
    if route is Route.BATCH_CREATE:
        submission = await proxy.batches.submit(caller, body)
        if submission.body is None:
            assert submission.first_refusal is not None
            await proxy._refuse(send, submission.first_refusal)
            return
        body = submission.body
    else:  # a blocked account may not read, cancel or delete batches either
        standing = proxy.gate.peek(caller.account, gate_now(), caller.aggregates)
        if standing.flags & BLOCK:
            proxy.gate.count(standing)
            await proxy._refuse(send, standing)
            return
    forward.append((b"accept-encoding", b"identity"))
    response = await proxy._upstream(send, proxy.upstream_client.request(
        method.encode(), (target.forward or target.path).encode("latin-1"), body, forward))
    if response is None:
        return
    try:
        answer = await proxy._upstream_answer(send, response)
        if answer is None:
            return
        status = response.status  # an error status here is the upstream's own, passed on
        if status < 300 and route is Route.BATCH_RESULTS:
            answer = await proxy.batches.results(target.path.split("/")[4], caller, answer)
        elif status < 300:
            if submission is not None:
                batch_id = batch_id_of(answer)
                if batch_id is None:
                    proxy.metrics.upstream_errors.labels("bad_json").inc()
                    await send_failure(send, MESSAGES_API, UPSTREAM_FAILURES["malformed"])
                    return
                proxy.batches.remember(batch_id, submission.entry)
            answer = with_results_url(answer, _base_url(scope))
        content_type = response.headers.get(b"content-type", b"application/json")
        await respond(send, status, answer, (b"content-type", content_type))
    finally:
        await response.aclose()


def batch_id_of(answer: bytes) -> str | None:
    try:
        created = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None
    batch_id = created.get("id") if isinstance(created, dict) else None
    return batch_id if isinstance(batch_id, str) else None


def _base_url(scope: Scope) -> str:
    host = next((v for k, v in scope["headers"] if k == b"host"), b"localhost")
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"
