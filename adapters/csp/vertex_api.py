"""Google Vertex AI's request shape: ``rawPredict`` and ``streamRawPredict``.

``POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict``
(``:streamRawPredict`` to stream): the body is a Messages body with ``anthropic_version``
(``vertex-2023-10-16``) and without ``model`` (the path names it); ``stream`` may be sent but
must agree with the operation (what the gate checks is what is served). The answer is the
Messages API's: a Messages response, or its SSE stream, ended with ``stop_reason: "refusal"``
where the gate stops it and with an SSE ``error`` event where the upstream cuts it.

Errors the platform itself gives (a refusal, a rate limit, a bad request) are Google's:
``{"error": {"code": 403, "message": ..., "status": "PERMISSION_DENIED"}}``.

Identity: the project in the path is the Google Cloud project the call is billed to. The
account is still the CSP's account header, proven by the caller assertion; where the front door
names a project (``x-csp-project-id``) it must be the path's, and where it names none the path's
project is the request's project id (recorded, never an enforcement key on its own).
"""

from __future__ import annotations

import json

from safeguards.adapters.csp.messages_api import (
    BadRequest,
    SseScanner,
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

# the gate's status -> (Google's status, its canonical code name)
ERRORS: dict[int, tuple[int, str]] = {
    400: (400, "INVALID_ARGUMENT"), 401: (401, "UNAUTHENTICATED"),
    403: (403, "PERMISSION_DENIED"), 404: (404, "NOT_FOUND"), 405: (405, "UNIMPLEMENTED"),
    413: (413, "INVALID_ARGUMENT"), 429: (429, "RESOURCE_EXHAUSTED"), 500: (500, "INTERNAL"),
    502: (502, "UNAVAILABLE"), 503: (503, "UNAVAILABLE"), 504: (504, "DEADLINE_EXCEEDED"),
    529: (503, "UNAVAILABLE"),
}


class VertexApi:
    name = "vertex"
    stream_content_type = b"text/event-stream; charset=utf-8"
    upstream_error_headers: frozenset[bytes] = frozenset()

    def parse(self, body: bytes, call: ProviderCall) -> ParsedRequest:
        assert call.model is not None and call.streamed is not None  # the route says them
        doc = json_object(body)
        version = doc.get("anthropic_version")
        if not isinstance(version, str) or not version:
            raise BadRequest(400, "anthropic_version: field required (a non-empty string)")
        if "model" in doc:
            raise BadRequest(400, "model: not permitted in a Vertex body (the path names it)")
        stream = doc.get("stream", call.streamed)
        if stream is not call.streamed:
            raise BadRequest(400, "stream: must be true for streamRawPredict and false for "
                                  "rawPredict")
        return ParsedRequest(doc, conversation_checked(doc), call.model, call.streamed)

    def error(self, status: int, message: str) -> ErrorAnswer:
        code, name = ERRORS.get(status, (status, "UNKNOWN"))
        body = {"error": {"code": code, "message": message, "status": name}}
        return ErrorAnswer(code, json.dumps(body).encode(), (JSON_HEADER,))

    def is_own_error(self, body: bytes) -> bool:
        # Google's shape, or the Anthropic error a Claude model on Vertex answers with
        return json_message(body, "error")

    def scanner(self) -> SseScanner:
        return SseScanner()


VERTEX_API = VertexApi()
