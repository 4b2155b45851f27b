"""The serving APIs the inline gate fronts, and the one table of upstream failures they share.

The model is served through three request shapes: Anthropic's Messages API (``/v1/messages``),
Amazon Bedrock's ``InvokeModel`` / ``InvokeModelWithResponseStream`` (``bedrock_api``) and Google
Vertex AI's ``rawPredict`` / ``streamRawPredict`` (``vertex_api``). Each is a
:class:`ProviderApi`: how its body is validated into the conversation the gate scores, how a
refusal or an error reads in its own shape, and how its stream is framed (SSE, or AWS
event-stream frames each carrying one Messages event). The gate, admission, the completion
checks and telemetry are the same for all three.

What goes wrong upstream is named once here (:data:`UPSTREAM_FAILURES`): the status and the
message each kind of failure gets, which every front end then renders in its provider's shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from safeguards.adapters.csp.identity import PROJECT_HEADER, Caller
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    SseScanner,
    error_body,
    is_anthropic_error,
    parse_messages_request,
)
from safeguards.adapters.csp.turns import Conversation

JSON_HEADER = (b"content-type", b"application/json")
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    doc: dict[str, Any]  # the body in the provider's shape: what goes upstream
    conversation: Conversation
    model: str
    streamed: bool


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    body: bytes
    headers: Headers


class StreamScanner(Protocol):
    """Splits a provider's stream into its units (SSE events, event-stream frames) and keeps
    the Messages stream's bookkeeping (``messages_api.EventLedger``)."""

    input_tokens: int
    output_tokens: int
    text_chars: int
    text: list[str]

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]: ...
    @property
    def pending(self) -> bytes: ...
    def completion(self) -> str: ...
    def refusal_events(self) -> bytes: ...
    def error_event(self, status: int, message: str) -> bytes: ...


class ProviderApi(Protocol):
    @property
    def name(self) -> str:
        """``messages``, ``bedrock`` or ``vertex`` (the request's surface says it)."""
    @property
    def stream_content_type(self) -> bytes: ...
    @property
    def upstream_error_headers(self) -> frozenset[bytes]:
        """Response headers that carry an upstream error's meaning in this shape (kept)."""
    def parse(self, body: bytes, call: ProviderCall) -> ParsedRequest: ...
    def error(self, status: int, message: str) -> ErrorAnswer: ...
    def is_own_error(self, body: bytes) -> bool: ...
    def scanner(self) -> StreamScanner: ...


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """A request's API and what its path says: the model (Bedrock, Vertex), whether it streams
    (Bedrock's and Vertex's operation names) and the Vertex project."""

    api: ProviderApi
    model: str | None = None
    streamed: bool | None = None
    project: str | None = None

    def surface(self, front_end: str) -> str:
        """The signal's ``surface``: ``proxy``/``ext_proc``, with the provider's API after a
        slash where it is not the Messages API (``proxy/bedrock``)."""
        name = self.api.name
        return front_end if name == "messages" else f"{front_end}/{name}"

    def caller(self, caller: Caller) -> Caller:
        """The caller with the project its path names (Vertex): the front door's project header
        must agree with it, and where it named none the path's project is the request's."""
        if self.project is None or caller.project_id == self.project:
            return caller
        if caller.project_id is None:
            return replace(caller, project_id=self.project)
        raise BadRequest(400, f"{PROJECT_HEADER} does not match the project in the path")


class MessagesApi:
    name = "messages"
    stream_content_type = b"text/event-stream; charset=utf-8"
    upstream_error_headers: frozenset[bytes] = frozenset()

    def parse(self, body: bytes, call: ProviderCall) -> ParsedRequest:
        doc, conversation = parse_messages_request(body)
        return ParsedRequest(doc, conversation, doc["model"], bool(doc.get("stream", False)))

    def error(self, status: int, message: str) -> ErrorAnswer:
        return ErrorAnswer(status, error_body(status, message), (JSON_HEADER,))

    def is_own_error(self, body: bytes) -> bool:
        return is_anthropic_error(body)

    def scanner(self) -> SseScanner:
        return SseScanner()


MESSAGES_API = MessagesApi()
MESSAGES_CALL = ProviderCall(MESSAGES_API)


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    status: int
    message: str


# The one table of upstream failures: every front end answers these, in its own shape.
UPSTREAM_FAILURES: dict[str, UpstreamFailure] = {
    "timeout": UpstreamFailure(504, "the upstream model timed out"),
    "unreachable": UpstreamFailure(502, "the upstream model is unreachable"),
    "cut_off": UpstreamFailure(502, "the upstream model's response was cut off"),
    "stream_cut_off": UpstreamFailure(502, "the upstream model's stream was cut off"),
    "malformed": UpstreamFailure(502, "the upstream model returned a malformed response"),
}


def upstream_status_failure(status: int) -> UpstreamFailure:
    """An upstream answer with an error status whose body is not in the provider's shape."""
    return UpstreamFailure(status if status >= 400 else 502,
                           f"the upstream model answered with status {status}")


def json_message(body: bytes, key: str) -> bool:
    """Whether ``body`` is a JSON object whose ``key`` holds an object or a string."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get(key), dict | str)
