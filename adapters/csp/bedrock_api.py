"""Amazon Bedrock's request shape: ``InvokeModel`` and ``InvokeModelWithResponseStream``.

``POST /model/{modelId}/invoke`` and ``POST /model/{modelId}/invoke-with-response-stream``: the
body is a Messages body with ``anthropic_version`` (``bedrock-2023-05-31``) and without
``model`` or ``stream`` (the path says both; a body that names them is refused, so that what the
gate checks is what is served). The model id is one path segment, percent-encoded where it holds
``/`` (an inference profile's ARN).

Errors are Bedrock's: the HTTP status, ``{"message": ...}`` and ``x-amzn-errortype`` naming the
exception (``AccessDeniedException`` for a refusal, ``ThrottlingException`` with
``retry-after``...). The stream is AWS event-stream frames (``aws_eventstream``), each ``chunk``
carrying one Messages event as base64 JSON; a stream the gate ends closes with
``stop_reason: "refusal"`` in chunks, a stream the upstream cuts with a
``modelStreamErrorException`` frame.
"""

from __future__ import annotations

import json

from safeguards.adapters.csp.aws_eventstream import (
    CONTENT_TYPE,
    FrameDecoder,
    MalformedFrame,
    chunk_event,
    chunk_frame,
    exception_frame,
)
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    EventLedger,
    conversation_checked,
    json_object,
)
from safeguards.adapters.csp.provider_api import (
    JSON_HEADER,
    ErrorAnswer,
    ParsedRequest,
    ProviderCall,
    json_message,
)
from safeguards.adapters.csp.upstream_client import UpstreamProtocolError

ERROR_TYPE_HEADER = b"x-amzn-errortype"
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
# the gate's status -> (Bedrock's status, exception name)
ERRORS: dict[int, tuple[int, str]] = {
    400: (400, "ValidationException"), 401: (401, "UnrecognizedClientException"),
    403: (403, "AccessDeniedException"), 404: (404, "ResourceNotFoundException"),
    405: (405, "UnknownOperationException"), 413: (413, "ValidationException"),
    429: (429, "ThrottlingException"), 500: (500, "InternalServerException"),
    502: (424, "ModelErrorException"), 503: (503, "ServiceUnavailableException"),
    504: (408, "ModelTimeoutException"), 529: (503, "ServiceUnavailableException"),
}
# the gate's status -> the event-stream exception that ends a stream
STREAM_ERRORS = {400: "validationException", 429: "throttlingException",
                 502: "modelStreamErrorException", 503: "serviceUnavailableException",
                 504: "modelTimeoutException", 529: "serviceUnavailableException"}


class EventStreamScanner(EventLedger):
    """Bedrock's stream: frames in, each handed back as the exact bytes that came, with the
    Messages event of each ``chunk`` noted."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        super().__init__()
        self._decoder = FrameDecoder()

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        try:
            frames = self._decoder.feed(chunk)
            out: list[tuple[bytes, int]] = []
            for frame in frames:
                event = chunk_event(frame)
                out.append((frame.raw, self.note(event) if event is not None else 0))
        except MalformedFrame as exc:  # the upstream's bytes, not the client's
            raise UpstreamProtocolError(f"the upstream's event stream is malformed "
                                        f"({type(exc).__name__})") from None
        return out

    @property
    def pending(self) -> bytes:
        return self._decoder.pending

    def refusal_events(self) -> bytes:
        return b"".join(chunk_frame(doc) for doc in self.refusal_docs())

    def error_event(self, status: int, message: str) -> bytes:
        return exception_frame(STREAM_ERRORS.get(status, "internalServerException"), message)


class BedrockApi:
    name = "bedrock"
    stream_content_type = CONTENT_TYPE
    upstream_error_headers = frozenset((ERROR_TYPE_HEADER, b"x-amzn-requestid"))

    def parse(self, body: bytes, call: ProviderCall) -> ParsedRequest:
        assert call.model is not None and call.streamed is not None  # the route says them
        doc = json_object(body)
        version = doc.get("anthropic_version")
        if not isinstance(version, str) or not version:
            raise BadRequest(400, "anthropic_version: field required (a non-empty string)")
        for key in ("model", "stream"):
            if key in doc:
                raise BadRequest(400, f"{key}: not permitted in a Bedrock body (the path "
                                      "names the model and whether it streams)")
        return ParsedRequest(doc, conversation_checked(doc), call.model, call.streamed)

    def error(self, status: int, message: str) -> ErrorAnswer:
        code, name = ERRORS.get(status, (status, "InternalServerException"))
        return ErrorAnswer(code, json.dumps({"message": message}).encode(),
                           (JSON_HEADER, (ERROR_TYPE_HEADER, (name + _CORAL).encode())))

    def is_own_error(self, body: bytes) -> bool:
        return json_message(body, "message")

    def scanner(self) -> EventStreamScanner:
        return EventStreamScanner()


BEDROCK_API = BedrockApi()
