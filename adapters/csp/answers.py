"""The upstream's answer on its way back to the client, and the ASGI plumbing the proxy shares.

``AnswerRelay`` passes a non-streaming answer through whole and an SSE stream event by event; for
accounts under ``terminate_stream`` (or every account with ``classify_all_streams``) the
completion is scored every ``gate.stream_classify_chars`` characters and ended with
``stop_reason: "refusal"`` once a score crosses ``gate.stream_stop_threshold``. Either way the
request is observed afterwards (tokens charged, signal and content queued).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.decision import TERMINATE_ACTION, Decision, GateRequest
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


class AnswerRelay:
    def __init__(self, admission: Admission, gate: Gate, metrics: CspMetrics, policy: Policy,
                 *, classify_all_streams: bool = False) -> None:
        self.admission = admission
        self.gate = gate
        self.metrics = metrics
        self.policy = policy
        self.classify_all_streams = classify_all_streams

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
        completion, tokens_in, tokens_out = completion_of(doc)
        action = decision.action
        if completion and (decision.classify_stream or self.classify_all_streams):
            verdict = await self.admission.completion_verdict(request, completion)
            if verdict is not None and isinstance(doc, dict):
                self.gate.count_terminated(decision.level, verdict)
                self.metrics.streams_terminated.labels(verdict).inc()
                body = json.dumps(refusal_message(doc)).encode()
                action = TERMINATE_ACTION
        headers = [JSON_HEADER, action_header(action)]
        request_id = response.headers.get(b"request-id")
        if request_id:
            headers.append((b"request-id", request_id))
        await respond(send, 200, body, *headers)
        self.admission.observe(request, action, tokens_in, tokens_out, prompt, completion)

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
        guarded = decision.classify_stream or self.classify_all_streams
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
                            verdict = await self.admission.completion_verdict(request,
                                                                             scanner.completion())
                            if verdict is not None:
                                self.gate.count_terminated(decision.level, verdict)
                                self.metrics.streams_terminated.labels(verdict).inc()
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
