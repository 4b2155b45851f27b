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
                         request; a benchmark client that chose it can subtract it exactly)

Streaming follows Anthropic's event sequence (message_start, content_block_start, ping,
content_block_delta..., content_block_stop, message_delta, message_stop) with usage tokens.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters.csp.messages_api import BadRequest, error_body, parse_messages_request, sse

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
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


class _Disconnect(Exception):
    """Ends a streamed response without its closing events (a scripted upstream failure)."""


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
        if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            await self._models(path, send)
            return
        counting = path == "/v1/messages/count_tokens"
        if (path != "/v1/messages" and not counting) or method != "POST":
            await _respond(send, 404, error_body(404, "no such endpoint"))
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.script.max_body_bytes:
                await _respond(send, 413, error_body(413, "request body too large"))
                return
        try:
            doc, _ = parse_messages_request(body)
        except BadRequest as exc:
            await _respond(send, exc.status, error_body(exc.status, str(exc)))
            return
        if counting:
            self.count_tokens_requests += 1
            prompt_chars = sum(len(t) for t in _all_texts(doc))
            await _respond(send, 200, json.dumps({"input_tokens": _tokens(prompt_chars)}).encode())
            return
        self.requests += 1
        self.last_system = doc.get("system")
        await self._complete(doc, send)

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
        await _respond(send, 404, error_body(404, "no such model"))

    async def _complete(self, doc: dict[str, Any], send: Send) -> None:
        last_user = _last_user_text(doc)
        reply = self.script.reply
        status = 200
        disconnect_after = -1
        delay_s = 0.0
        wait_s = 0.0
        for m in _DIRECTIVE.finditer(last_user):
            name, value, flag = m.group(1), m.group(2), m.group(3)
            if flag == "echo":
                reply = last_user
            elif name == "reply-chars":
                n = int(value)
                reply = (_FILLER * (n // len(_FILLER) + 1))[:n]
            elif name == "status":
                status = int(value)
            elif name == "disconnect-after":
                disconnect_after = int(value)
            elif name == "delay-ms":
                delay_s = int(value) / 1000
            elif name == "wait-us":
                wait_s = int(value) / 1_000_000
        if status != 200:
            await _respond(send, status, error_body(status, "scripted upstream failure"))
            return
        if wait_s:
            await anyio.sleep(wait_s)
        prompt_chars = sum(len(t) for t in _all_texts(doc))
        message_id = "msg_" + secrets.token_hex(12)
        usage_in, usage_out = _tokens(prompt_chars), _tokens(len(reply))
        if not doc.get("stream", False):
            await _respond(send, 200, json.dumps({
                "id": message_id, "type": "message", "role": "assistant", "model": doc["model"],
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
            }).encode())
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"request-id", b"req_" + secrets.token_hex(8).encode()),
        ]})
        head = sse("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": doc["model"],
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 1}}})
        head += sse("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})
        head += sse("ping", {"type": "ping"})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        step = self.script.chunk_chars
        for start in range(0, len(reply), step):
            if 0 <= disconnect_after <= start:
                raise _Disconnect("scripted disconnect")
            if delay_s:
                await anyio.sleep(delay_s)
            delta = sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": reply[start:start + step]}})
            await send({"type": "http.response.body", "body": delta, "more_body": True})
        tail = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        tail += sse("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": usage_out}})
        tail += sse("message_stop", {"type": "message_stop"})
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


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def serve_upstream(host: str, port: int, script: Script | None = None) -> None:
    import uvicorn

    config = uvicorn.Config(UpstreamApp(script), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off", loop="none",
                            proxy_headers=False, date_header=False)
    await uvicorn.Server(config).serve()
