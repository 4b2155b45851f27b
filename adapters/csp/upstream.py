"""A stand-in for the provider's model: a small server speaking the Anthropic Messages API.

It stands in for the model only (never for any part of the safeguards system), for demos, tests
and benchmarks. Completions are scripted: by default a fixed reply; directives in the last user
message change the script, so a test can ask for what it needs through an unmodified client:

- ``#reply-chars=N``     a reply of N characters
- ``#echo``              the reply repeats the prompt's last user text (to test for leaks)
- ``#status=NNN``        answer with that HTTP status and an Anthropic error body
- ``#disconnect-after=N`` (streaming) drop the connection after N characters of completion
- ``#delay-ms=N``        wait N ms between streamed chunks
- ``#wait-us=N``         take N microseconds before the first byte (a model's time for this
                         request; a benchmark client that chose it can subtract it exactly;
                         the ``x-stand-in-wait-us`` header asks the same without changing the
                         prompt the gate screens)

Streaming follows Anthropic's event sequence (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop) with usage tokens.

It answers in each provider's shape on the provider's paths (the gate's route table,
``routes``): Bedrock's ``/model/{id}/invoke`` (JSON) and ``invoke-with-response-stream`` (each
event in an AWS event-stream ``chunk`` frame), Vertex's ``:rawPredict`` and ``:streamRawPredict``
(SSE), with errors in each provider's shape (``#status=NNN`` too), and Bedrock's and Vertex's
batch jobs (``upstream_jobs``: created, listed, read, stopped; none is run).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters.csp.aws_eventstream import chunk_frame
from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.messages_api import BadRequest, parse_messages_request, sse
from safeguards.adapters.csp.provider_api import MESSAGES_API, ParsedRequest, ProviderApi
from safeguards.adapters.csp.routes import Denied, Route, match
from safeguards.adapters.csp.upstream_batches import BatchStore
from safeguards.adapters.csp.upstream_jobs import JobStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_REPLY = ("Here is a short, helpful answer from the scripted stand-in model. It says the "
                 "same thing every time, so tests and benchmarks can rely on it.")
_DIRECTIVE = re.compile(
    r"#(reply-chars|status|disconnect-after|delay-ms|wait-us)=(\d{1,8})|#(echo)")
MODELS: tuple[dict[str, str], ...] = tuple(
    {"type": "model", "id": name, "display_name": display, "created_at": "2025-01-01T00:00:00Z"}
    for name, display in (("claude-stand-in-1", "Stand-in 1"),
                          ("claude-stand-in-2", "Stand-in 2")))
WAIT_HEADER = b"x-stand-in-wait-us"
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


class _Disconnect(Exception):
    """Ends a streamed response without its closing events (a scripted upstream failure)."""


@dataclass(slots=True)
class Scripted:
    reply: str
    status: int = 200
    disconnect_after: int = -1
    delay_s: float = 0.0
    wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Script:
    reply: str = DEFAULT_REPLY
    chunk_chars: int = 16
    max_body_bytes: int = 32 * 1024 * 1024


def _tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)


class UpstreamApp:
    """ASGI app: ``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``,
    ``GET /v1/models`` (and ``/v1/models/{id}``) and ``GET /healthz``."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests = 0
        self.count_tokens_requests = 0
        self.model_requests = 0
        self.last_system: Any = None  # what the last request's system prompt was (for tests)
        self.batches = BatchStore(self)
        self.jobs = JobStore()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await _respond(send, 200, b'{"ok":true}')
            return
        path, method = scope["path"], scope["method"]
        target = match(method, (scope.get("raw_path") or path.encode()).decode("latin-1"),
                       batches=True)
        if isinstance(target, Denied):
            await _error(send, target.api, 404, "no such endpoint")
            return
        api = target.call.api
        if target.route is Route.MODELS:
            await self._models(target.path, send)
            return
        if target.route is Route.JOB_READ:
            await _respond(send, *_json(self.jobs.read(api, method, target.path)))
            return
        if target.route in (Route.BATCH_READ, Route.BATCH_RESULTS):
            status, answer = self.batches.read(method, target.path, _base_url(scope))
            await _respond(send, status, answer)
            return
        counting = target.route is Route.COUNT_TOKENS
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.script.max_body_bytes:
                await _error(send, api, 413, "request body too large")
                return
        if target.route is Route.JOB_CREATE:  # a provider's batch job (upstream_jobs)
            await _respond(send, *_json(self.jobs.create(api, target.path, body)))
            return
        if target.route is Route.BATCH_CREATE:
            status, answer = self.batches.create(body, _base_url(scope))
            await _respond(send, status, answer)
            return
        try:
            if counting:
                doc, _ = parse_messages_request(body)
            else:
                parsed = api.parse(body, target.call)
                doc = parsed.doc
        except BadRequest as exc:
            await _error(send, api, exc.status, str(exc))
            return
        if counting:
            self.count_tokens_requests += 1
            prompt_chars = sum(len(t) for t in _all_texts(doc))
            await _respond(send, 200, json.dumps({"input_tokens": _tokens(prompt_chars)}).encode())
            return
        self.requests += 1
        self.last_system = doc.get("system")
        await self._complete(parsed, api, send, _wait_header(scope))

    async def _models(self, path: str, send: Send) -> None:
        self.model_requests += 1
        if path == "/v1/models":
            await _respond(send, 200, json.dumps({
                "data": list(MODELS), "has_more": False, "first_id": MODELS[0]["id"],
                "last_id": MODELS[-1]["id"]}).encode())
            return
        wanted = path.removeprefix("/v1/models/")
        for model in MODELS:
            if model["id"] == wanted:
                await _respond(send, 200, json.dumps(model).encode())
                return
        await _error(send, None, 404, "no such model")

    def scripted(self, doc: dict[str, Any]) -> Scripted:
        """What the script answers to a request (its directives read)."""
        last_user = _last_user_text(doc)
        out = Scripted(self.script.reply)
        for m in _DIRECTIVE.finditer(last_user):
            name, value, flag = m.group(1), m.group(2), m.group(3)
            if flag == "echo":
                out.reply = last_user
            elif name == "reply-chars":
                n = int(value)
                out.reply = (_FILLER * (n // len(_FILLER) + 1))[:n]
            elif name == "status":
                out.status = int(value)
            elif name == "disconnect-after":
                out.disconnect_after = int(value)
            elif name == "delay-ms":
                out.delay_s = int(value) / 1000
            elif name == "wait-us":
                out.wait_s = int(value) / 1_000_000
        return out

    def message(self, doc: dict[str, Any], model: str, reply: str) -> dict[str, Any]:
        """The whole Messages response to ``doc``."""
        prompt_chars = sum(len(t) for t in _all_texts(doc))
        return {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": _tokens(prompt_chars),
                          "output_tokens": _tokens(len(reply))}}

    async def _complete(self, parsed: ParsedRequest, api: ProviderApi, send: Send,
                        wait_s: float = 0.0) -> None:
        doc, model = parsed.doc, parsed.model
        scripted = self.scripted(doc)
        reply, disconnect_after, delay_s = (scripted.reply, scripted.disconnect_after,
                                            scripted.delay_s)
        if scripted.status != 200:
            await _error(send, api, scripted.status, "scripted upstream failure")
            return
        scripted.wait_s += wait_s
        if scripted.wait_s:
            await anyio.sleep(scripted.wait_s)
        whole = self.message(doc, model, reply)
        if not parsed.streamed:
            await _respond(send, 200, json.dumps(whole).encode())
            return
        message_id = whole["id"]
        usage_in, usage_out = (whole["usage"]["input_tokens"],
                               whole["usage"]["output_tokens"])
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", api.stream_content_type), (b"cache-control", b"no-cache"),
            (b"request-id", b"req_" + secrets.token_hex(8).encode()),
        ]})
        event = chunk_frame if api is BEDROCK_API else _sse
        head = event({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 1}}})
        head += event({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}})
        head += event({"type": "ping"})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        step = self.script.chunk_chars
        for start in range(0, len(reply), step):
            if 0 <= disconnect_after <= start:
                raise _Disconnect("scripted disconnect")
            if delay_s:
                await anyio.sleep(delay_s)
            delta = event({
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": reply[start:start + step]}})
            await send({"type": "http.response.body", "body": delta, "more_body": True})
        tail = event({"type": "content_block_stop", "index": 0})
        tail += event({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": usage_out}})
        tail += event({"type": "message_stop"})
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _all_texts(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    system = doc.get("system")
    if isinstance(system, str):
        out.append(system)
    for message in doc["messages"]:
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out += [b["text"] for b in content if b.get("type") == "text"]
    return out


def _last_user_text(doc: dict[str, Any]) -> str:
    for message in reversed(doc["messages"]):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "".join(b["text"] for b in content if b.get("type") == "text")
    return ""


def _wait_header(scope: Scope) -> float:
    """The ``x-stand-in-wait-us`` header's model time (seconds): a benchmark's way to ask for it
    without changing the prompt the gate screens."""
    for name, value in scope["headers"]:
        if name == WAIT_HEADER and value.isdigit() and len(value) <= 8:
            return int(value) / 1_000_000
    return 0.0


def _base_url(scope: Scope) -> str:
    host = dict(scope["headers"]).get(b"host", b"localhost").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}"


def _json(answer: tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]
          ) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
    status, body, headers = answer
    return status, body, headers or ((b"content-type", b"application/json"),)


def _sse(doc: dict[str, Any]) -> bytes:
    return sse(str(doc["type"]), doc)


async def _respond(send: Send, status: int, body: bytes,
                   headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type",
                                                                 b"application/json"),)) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        *headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, api: ProviderApi | None, status: int, message: str) -> None:
    answer = (api or MESSAGES_API).error(status, message)
    await _respond(send, answer.status, answer.body, answer.headers)


async def serve_upstream(host: str, port: int, script: Script | None = None) -> None:
    import uvicorn

    config = uvicorn.Config(UpstreamApp(script), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off", loop="none",
                            proxy_headers=False, date_header=False)
    await uvicorn.Server(config).serve()
