"""Envoy ext_proc: the same gate, applied by Envoy's External Processing filter over gRPC.

One ``Process`` stream is one HTTP exchange. Expected filter settings: request headers SEND,
request body BUFFERED (so a safety system prompt can replace the whole body), response headers
SEND, response body STREAMED (SSE) or BUFFERED (JSON). Per message:

- request headers: the identity headers are validated (``identity``); a bad or duplicate one is
  an immediate Anthropic error.
- request body: ``admit`` (check + synchronous classification); a refusal is an immediate
  response (403/429 with ``retry-after``/529), an intervention replaces the body.
- response headers: remembers whether the response streams; drops ``content-length`` when the
  body may be rewritten.
- response body: the completion is scored every ``gate.stream_classify_chars`` characters for
  accounts under ``terminate_stream``; once a score crosses the threshold, the chunk is cut at
  the crossing event and ends with ``stop_reason: "refusal"``, and later chunks are emptied.
  At end of stream the tokens are charged and telemetry queued.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

from safeguards.adapters.csp.admission import Admission, Admitted
from safeguards.adapters.csp.caller_auth import (
    ASSERTION_HEADER,
    CallerAuth,
    CallerKey,
    load_caller_keys,
)
from safeguards.adapters.csp.decision import TERMINATE_ACTION, Decision, refusal
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.identity import Caller, IdentityHeaders
from safeguards.adapters.csp.inline_gate import InlineGate
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    SseScanner,
    completion_of,
    error_body,
    refusal_message,
    with_safety_prompt,
)
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.core.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExtProcConfig:
    region: str
    nats_url: str | None = None
    listen: str = "127.0.0.1:50051"
    account_header: str = "x-csp-account-id"
    link_key: bytes | None = None  # the region's API-key fingerprint key (None: load_link_key)
    max_body_bytes: int = 8 * 1024 * 1024
    partitions: int = 16
    classify_all_streams: bool = False
    telemetry_capacity: int = 10_000
    telemetry_workers: int = 1
    telemetry_linger_s: float = 0.005  # how long a telemetry batch waits to fill
    publish_timeout_s: float = 2.0
    feed_heartbeat_s: float = 1.0
    freeze_gc_after_sync: bool = False  # a server process: move the loaded cache out of GC scans
    metrics_port: int = 0  # a Prometheus /metrics endpoint on this port (0: none)
    # Caller authentication, as on the proxy: "required", or "loopback" (unsigned requests when
    # the front door, Envoy, calls from this machine; where Envoy sends the ``source.address``
    # attribute, when the downstream client itself is on this machine); keys: load_caller_keys.
    caller_auth: str = "required"
    caller_keys: tuple[CallerKey, ...] | None = None


@dataclass(slots=True)
class _Exchange:
    """What one HTTP exchange has shown so far."""

    caller: Caller | None = None
    identity: dict[str, str] = field(default_factory=dict)  # the identity headers as sent
    proof: str | None = None  # the caller assertion
    peer: str | None = None  # the front door's address (the gRPC peer)
    gated: bool = False  # a POST to /v1/messages
    body: bytearray = field(default_factory=bytearray)
    admitted: Admitted | None = None
    streaming: bool = False
    guarded: bool = False
    response_body: bytearray = field(default_factory=bytearray)
    scanner: SseScanner = field(default_factory=SseScanner)
    checked_at: int = 0
    action: str = ""
    terminated: bool = False
    observed: bool = False


def _continue_headers(*, remove: tuple[str, ...] = ()) -> pb.HeadersResponse:
    common = pb.CommonResponse()
    if remove:
        common.header_mutation.remove_headers.extend(remove)
    return pb.HeadersResponse(response=common)


def _immediate(status: int, message: str, *extra: tuple[str, str]) -> pb.ProcessingResponse:
    headers = pb.HeaderMutation(set_headers=[
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()))
        for k, v in (("content-type", "application/json"), *extra)
    ])
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),  # type: ignore[arg-type]
        headers=headers, body=error_body(status, message),
        details=f"safeguards_{status}",
    ))


def _body_response(body: bytes | None = None, *, clear: bool = False,
                   content_length: bool = False) -> pb.BodyResponse:
    common = pb.CommonResponse()
    if clear:
        common.body_mutation.clear_body = True
    elif body is not None:
        common.body_mutation.body = body
        if content_length:
            common.header_mutation.set_headers.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-length",
                                            raw_value=str(len(body)).encode())))
    return pb.BodyResponse(response=common)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _peer_host(context: Any) -> str | None:
    """The gRPC peer's address (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) without its port."""
    peer = str(context.peer()) if context is not None else ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


def _downstream_host(message: pb.ProcessingRequest) -> str | None:
    """The downstream client's address where Envoy sends it (``request_attributes:
    ["source.address"]``, as ``10.0.0.5:41000`` or ``[::1]:41000``), without its port; "" for
    one that does not parse (never loopback)."""
    attributes = message.attributes.get("envoy.filters.http.ext_proc")
    if attributes is None or "source.address" not in attributes.fields:
        return None
    address = attributes.fields["source.address"].string_value
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else ""


def _header(headers: Any, name: str) -> str | None:
    for h in headers.headers:
        if h.key.lower() == name:
            return h.raw_value.decode("latin-1") if h.raw_value else str(h.value)
    return None


class ExtProcService(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, config: ExtProcConfig, policy: Policy, gate: Gate,
                 admission: Admission, metrics: CspMetrics, identity: IdentityHeaders) -> None:
        self.config = config
        self.policy = policy
        self.gate = gate
        self.admission = admission
        self.metrics = metrics
        self.identity = identity
        keys = config.caller_keys or tuple(load_caller_keys(config.region))
        self.caller_auth = CallerAuth(list(keys), config.caller_auth, config.account_header)
        self.exchanges = 0

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: Any) -> AsyncIterator[pb.ProcessingResponse]:
        self.exchanges += 1
        ex = _Exchange(peer=_peer_host(context))
        try:
            async for message in request_iterator:
                response = await self._handle(ex, message)
                yield response
                if response.HasField("immediate_response"):
                    return
        finally:
            self._observe(ex)

    async def _handle(self, ex: _Exchange, message: pb.ProcessingRequest) -> pb.ProcessingResponse:
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            downstream = _downstream_host(message)
            if downstream is not None:  # Envoy names the client: judge it, not Envoy itself
                ex.peer = downstream
            return self._request_headers(ex, message.request_headers)
        if kind == "request_body":
            return await self._request_body(ex, message.request_body)
        if kind == "response_headers":
            return self._response_headers(ex, message.response_headers)
        if kind == "response_body":
            return await self._response_body(ex, message.response_body)
        if kind == "request_trailers":
            return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
        if kind == "response_trailers":
            return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
        raise BadRequest(400, f"unexpected ext_proc message {kind!r}")

    def _request_headers(self, ex: _Exchange, headers: pb.HttpHeaders) -> pb.ProcessingResponse:
        path = (_header(headers.headers, ":path") or "").split("?", 1)[0]
        method = _header(headers.headers, ":method") or ""
        if path != "/v1/messages" or method != "POST":
            return pb.ProcessingResponse(request_headers=_continue_headers())
        ex.gated = True
        try:
            pairs = [(h.key.lower(), h.raw_value if h.raw_value else str(h.value))
                     for h in headers.headers.headers]
            ex.caller = self.identity.caller(pairs)
            ex.identity = {k: _text(v) for k, v in pairs if k in self.identity.names}
            proofs = [_text(v) for k, v in pairs if k == ASSERTION_HEADER]
            if len(proofs) > 1:
                raise BadRequest(400, f"duplicate {ASSERTION_HEADER} header")
            ex.proof = proofs[0] if proofs else None
            declared = _header(headers.headers, "content-length")
            limit = self.config.max_body_bytes
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise BadRequest(413, f"request body exceeds {limit} bytes")
            if headers.end_of_stream:
                raise BadRequest(400, "request body is required")
        except BadRequest as exc:
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            return _immediate(exc.status, str(exc))
        # A blocked account is refused on its headers: Envoy need not buffer the body.
        standing = self.gate.peek(ex.caller.account, time.time(), ex.caller.aggregates)
        if standing.status == 403:
            self.gate.count(standing)
            return self._refusal(standing)
        return pb.ProcessingResponse(request_headers=_continue_headers())

    async def _request_body(self, ex: _Exchange, body: pb.HttpBody) -> pb.ProcessingResponse:
        if not ex.gated or ex.caller is None:
            return pb.ProcessingResponse(request_body=_body_response())
        ex.body += body.body
        try:
            if len(ex.body) > self.config.max_body_bytes:
                raise BadRequest(413, f"request body exceeds {self.config.max_body_bytes} bytes")
            if not body.end_of_stream:
                return pb.ProcessingResponse(request_body=_body_response())
            self.caller_auth.check(ex.identity, ex.proof, bytes(ex.body), ex.peer, time.time())
            admitted = await self.admission.admit(ex.caller, bytes(ex.body), "ext_proc")
        except BadRequest as exc:
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            return _immediate(exc.status, str(exc))
        ex.admitted = admitted
        decision = admitted.decision
        ex.action = decision.action
        ex.guarded = decision.classify_stream or self.config.classify_all_streams
        if decision.refused:
            return self._refusal(decision)
        if decision.safety_prompt:
            new_body = json.dumps(with_safety_prompt(admitted.doc)).encode()
            return pb.ProcessingResponse(
                request_body=_body_response(new_body, content_length=True))
        return pb.ProcessingResponse(request_body=_body_response())

    def _refusal(self, decision: Decision) -> pb.ProcessingResponse:
        message, extra = refusal(decision)
        return _immediate(decision.status, message, *extra,
                          ("x-safeguards-action", decision.action))

    def _response_headers(self, ex: _Exchange,
                          headers: pb.HttpHeaders) -> pb.ProcessingResponse:
        content_type = _header(headers.headers, "content-type") or ""
        ex.streaming = content_type.startswith("text/event-stream")
        status = _header(headers.headers, ":status") or "200"
        if status != "200":
            ex.guarded = False
        remove = ("content-length",) if ex.guarded else ()
        return pb.ProcessingResponse(response_headers=_continue_headers(remove=remove))

    async def _response_body(self, ex: _Exchange, body: pb.HttpBody) -> pb.ProcessingResponse:
        if ex.admitted is None:
            return pb.ProcessingResponse(response_body=_body_response())
        if ex.terminated:
            return pb.ProcessingResponse(response_body=_body_response(clear=True))
        if ex.streaming:
            return pb.ProcessingResponse(response_body=await self._stream_chunk(ex, body))
        ex.response_body += body.body
        if not body.end_of_stream:
            return pb.ProcessingResponse(response_body=_body_response())
        try:
            doc = json.loads(bytes(ex.response_body))
        except (ValueError, UnicodeDecodeError):
            return pb.ProcessingResponse(response_body=_body_response())
        completion, tokens_in, tokens_out = completion_of(doc)
        ex.scanner.input_tokens, ex.scanner.output_tokens = tokens_in, tokens_out
        ex.scanner.text = [completion]
        if ex.guarded and completion and isinstance(doc, dict):
            verdict = await self.admission.completion_verdict(ex.admitted.request, completion)
            if verdict is not None:
                self._terminated(ex, verdict)
                return pb.ProcessingResponse(response_body=_body_response(
                    json.dumps(refusal_message(doc)).encode()))
        return pb.ProcessingResponse(response_body=_body_response())

    async def _stream_chunk(self, ex: _Exchange, body: pb.HttpBody) -> pb.BodyResponse:
        assert ex.admitted is not None
        scanner = ex.scanner
        events = scanner.feed(body.body)
        if not ex.guarded:
            return _body_response()
        out = b""
        every = self.gate.policy.gate.stream_classify_chars  # the policy in force now
        for raw, added in events:
            if added and scanner.text_chars - ex.checked_at >= every:
                ex.checked_at = scanner.text_chars
                verdict = await self.admission.completion_verdict(ex.admitted.request,
                                                                  scanner.completion())
                if verdict is not None:
                    self._terminated(ex, verdict)
                    return _body_response(out + scanner.refusal_events())
            out += raw
        if body.end_of_stream:
            out += scanner.pending
        # Complete events go on now; a partial one waits for the next chunk.
        return _body_response(out)

    def _terminated(self, ex: _Exchange, verdict: str) -> None:
        assert ex.admitted is not None
        ex.terminated = True
        ex.action = TERMINATE_ACTION
        self.gate.count_terminated(ex.admitted.decision.level, verdict)
        self.metrics.streams_terminated.labels(verdict).inc()

    def _observe(self, ex: _Exchange) -> None:
        if ex.admitted is None or ex.observed:
            return
        ex.observed = True
        tokens_in = ex.scanner.input_tokens if not ex.admitted.decision.refused else 0
        tokens_out = ex.scanner.output_tokens if not ex.admitted.decision.refused else 0
        self.admission.observe(ex.admitted.request, ex.action, tokens_in, tokens_out,
                               ex.admitted.prompt, ex.scanner.completion())


class ExtProcServer:
    """The ext_proc gRPC server with its gate, feed and telemetry; ``running()`` owns them."""

    def __init__(self, config: ExtProcConfig, policy: Policy) -> None:
        self.config = config
        self.inline = InlineGate(policy, config, connection_name="safeguards-extproc")
        i = self.inline
        self.gate, self.link, self.feed, self.telemetry = i.gate, i.link, i.feed, i.telemetry
        self.classifier, self.metrics, self.admission = i.classifier, i.metrics, i.admission
        self.service = ExtProcService(config, policy, self.gate, self.admission, self.metrics,
                                      i.identity)
        self.port: int | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ExtProcServer]:
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(self.service, server)
        self.port = server.add_insecure_port(self.config.listen)
        async with self.inline.running():
            await server.start()
            try:
                yield self
            finally:
                with anyio.move_on_after(5, shield=True):
                    await server.stop(grace=1.0)


async def serve_extproc(config: ExtProcConfig, policy: Policy) -> None:
    server = ExtProcServer(replace(config, freeze_gc_after_sync=True), policy)
    async with server.running():
        if config.metrics_port:
            from prometheus_client import start_http_server

            host = config.listen.rsplit(":", 1)[0] or "127.0.0.1"
            start_http_server(config.metrics_port, addr=host, registry=server.metrics.registry)
        log.info("ext_proc listening on %s", config.listen)
        await anyio.sleep_forever()
