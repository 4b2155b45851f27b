"""The upstream's answer on its way back to the client, and the ASGI plumbing the proxy shares.

``AnswerRelay`` passes a non-streaming answer through whole and an SSE stream event by event; for
accounts under ``terminate_stream`` (or every account with ``classify_all_streams``) the
completion is scored every ``gate.stream_classify_chars`` characters and ended with
``stop_reason: "refusal"`` once a score crosses ``gate.stream_stop_threshold``. Either way the
request is observed afterwards (tokens charged, signal and content queued).

``CompletionGuard`` is that check, the one path for every answer that carries a completion: a
whole response, a stream's text so far, a Message Batch's result (``batches``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.decision import (
    TERMINATE_ACTION,
    Decision,
    GateRequest,
    StreamVerdict,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    completion_of,
    error_body,
    refusal_message,
)
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.provider_api import (
    MESSAGES_API,
    UPSTREAM_FAILURES,
    ProviderApi,
    UpstreamFailure,
    upstream_status_failure,
)
from safeguards.adapters.csp.upstream_client import UpstreamError, UpstreamResponse
from safeguards.core.policy import Policy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADER = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class Checked:
    """A whole answer after its completion check: ``doc`` as the client gets it (a refusal,
    ``stop_reason: "refusal"`` and no content, when ``withheld``), the completion's text (for
    the content stream, never a log), its tokens, and whether the classifier scored it."""

    doc: Any
    completion: str
    tokens_in: int
    tokens_out: int
    withheld: bool
    scored: bool = False  # checked with the classifier's scores (no fallback taken)


class CompletionGuard:
    """The policy's action on a model's completion. Where the account's level ends streams
    (``terminate_stream``: on the decision its request was admitted with, or, for an answer
    read later such as a batch's result, on its standing now) or with ``classify_all_streams``,
    the completion is scored; a score over ``gate.stream_stop_threshold`` (or a fail-closed
    classifier failure) withholds it, counted by the gate (``count_terminated``: the level and
    the category) and in ``streams_terminated``."""

    def __init__(self, admission: Admission, gate: Gate, metrics: CspMetrics, *,
                 classify_all_streams: bool = False) -> None:
        self.admission = admission
        self.gate = gate
        self.metrics = metrics
        self.classify_all_streams = classify_all_streams

    def guarded(self, *decisions: Decision) -> bool:
        return self.classify_all_streams or any(d.classify_stream for d in decisions)

    async def ends(self, request: GateRequest, level: int, completion: str) -> bool:
        """Scores ``completion`` (so far); True, counted, when it must end now."""
        return (await self._check(request, level, completion)).stop is not None

    async def _check(self, request: GateRequest, level: int, completion: str) -> StreamVerdict:
        verdict = await self.admission.completion_check(request, completion)
        if verdict.stop is not None:
            self.gate.count_terminated(level, verdict.stop)
            self.metrics.streams_terminated.labels(verdict.stop).inc()
        return verdict

    async def whole(self, request: GateRequest, doc: Any, *decisions: Decision) -> Checked:
        """A whole Messages response (``doc``, parsed) checked under ``decisions`` (the first,
        the request's admission; any other, the account's standing since)."""
        completion, tokens_in, tokens_out = completion_of(doc)
        verdict = None
        if completion and isinstance(doc, dict) and self.guarded(*decisions):
            verdict = await self._check(request, max(d.level for d in decisions), completion)
        withheld = verdict is not None and verdict.stop is not None
        return Checked(refusal_message(doc) if withheld else doc, completion, tokens_in,
                       tokens_out, withheld, verdict is not None and verdict.fallback is None)


class AnswerRelay:
    def __init__(self, admission: Admission, gate: Gate, metrics: CspMetrics, policy: Policy,
                 *, classify_all_streams: bool = False) -> None:
        self.admission = admission
        self.gate = gate
        self.metrics = metrics
        self.policy = policy
        self.guard = CompletionGuard(admission, gate, metrics,
                                     classify_all_streams=classify_all_streams)

    async def whole(self, request: GateRequest, decision: Decision, response: UpstreamResponse,
                     send: Send, prompt: str, api: ProviderApi = MESSAGES_API) -> None:
        try:
            body = await response.read()
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()
            await send_failure(send, api, UPSTREAM_FAILURES["cut_off"])
            self.admission.observe(request, decision.action, 0, 0, prompt, "")
            return
        status = response.status
        if status != 200:
            self.metrics.upstream_errors.labels(f"status_{status}").inc()
            extra = (action_header(decision.action),)
            if api.is_own_error(body):  # the provider's own error: passed on as it is
                kept = tuple((n, v) for n, v in response.headers.items()
                             if n in api.upstream_error_headers)
                await respond(send, status, body, JSON_HEADER, *kept, *extra)
            else:
                await send_failure(send, api, upstream_status_failure(status), extra)
            self.admission.observe(request, decision.action, 0, 0, prompt, "")
            return
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self.metrics.upstream_errors.labels("bad_json").inc()
            await send_failure(send, api, UPSTREAM_FAILURES["malformed"])
            self.admission.observe(request, decision.action, 0, 0, prompt, "")
            return
        # An answer nobody checks is passed on first; its tokens and text are read after.
        checked = (await self.guard.whole(request, doc, decision)
                   if self.guard.guarded(decision) else None)
        action = decision.action
        if checked is not None and checked.withheld:
            body = json.dumps(checked.doc).encode()
            action = TERMINATE_ACTION
        headers = [JSON_HEADER, action_header(action)]
        request_id = response.headers.get(b"request-id")
        if request_id:
            headers.append((b"request-id", request_id))
        await respond(send, 200, body, *headers)
        if checked is None:
            checked = await self.guard.whole(request, doc, decision)
        self.admission.observe(request, action, checked.tokens_in, checked.tokens_out, prompt,
                               checked.completion)

    async def stream(self, request: GateRequest, decision: Decision, response: UpstreamResponse,
                      receive: Receive, send: Send, prompt: str,
                      api: ProviderApi = MESSAGES_API) -> None:
        headers = [(b"content-type", api.stream_content_type),
                   (b"cache-control", b"no-cache"), action_header(decision.action)]
        request_id = response.headers.get(b"request-id")
        if request_id:
            headers.append((b"request-id", request_id))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        scanner = api.scanner()
        every = self.gate.policy.gate.stream_classify_chars  # the policy in force now
        guarded = self.guard.guarded(decision)
        action = decision.action
        checked_at = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_disconnect, receive, tg.cancel_scope)
            try:
                async for chunk in response.chunks():
                    if not guarded:
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                        scanner.feed(chunk)
                        continue
                    out = b""
                    for raw, added in scanner.feed(chunk):
                        if added and scanner.text_chars - checked_at >= every:
                            checked_at = scanner.text_chars
                            if out:
                                await send({"type": "http.response.body", "body": out,
                                            "more_body": True})
                                out = b""
                            if await self.guard.ends(request, decision.level,
                                                     scanner.completion()):
                                action = TERMINATE_ACTION
                                break
                        out += raw
                    if action == TERMINATE_ACTION:
                        await send({"type": "http.response.body",
                                    "body": out + scanner.refusal_events(), "more_body": True})
                        break
                    if out:
                        await send({"type": "http.response.body", "body": out,
                                    "more_body": True})
                else:
                    if guarded and scanner.pending:
                        # a last event without its blank line: the client gets it as sent
                        await send({"type": "http.response.body", "body": scanner.pending,
                                    "more_body": True})
            except UpstreamError as exc:
                self.metrics.upstream_errors.labels(f"stream_{type(exc).__name__}").inc()
                failure = UPSTREAM_FAILURES["stream_cut_off"]
                await send({"type": "http.response.body",
                            "body": scanner.error_event(failure.status, failure.message),
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()
        self.admission.observe(request, action, scanner.input_tokens, scanner.output_tokens, prompt,
                      scanner.completion())


async def send_error(send: Send, status: int, message: str,
                     extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """An error in Anthropic's format (the message names no prompt or completion text)."""
    await respond(send, status, error_body(status, message), JSON_HEADER, *extra)


async def send_api_error(send: Send, api: ProviderApi, status: int, message: str,
                         extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """An error in ``api``'s shape (the message names no prompt or completion text)."""
    answer = api.error(status, message)
    await respond(send, answer.status, answer.body, *answer.headers, *extra)


async def send_failure(send: Send, api: ProviderApi, failure: UpstreamFailure,
                       extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send_api_error(send, api, failure.status, failure.message, extra)


def action_header(action: str) -> tuple[bytes, bytes]:
    return (b"x-safeguards-action", action.encode())


async def read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def respond(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
