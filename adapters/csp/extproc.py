"""Envoy ext_proc: the same gate, applied by Envoy's External Processing filter over gRPC.

One ``Process`` stream is one HTTP exchange. Expected filter settings: request headers SEND,
request body BUFFERED (a safety system prompt replaces the whole body), response headers SEND,
response body STREAMED (SSE) or BUFFERED (JSON), on every route. Per message:

- request headers: deny by default: the normalised path is matched against ``routes`` (the
  messages, Bedrock and Vertex routes gated; batches by ``extproc_batches``, providers' batch
  jobs by ``extproc_jobs``; count_tokens and models checked as on the proxy); anything else is
  an immediate 404 or 405 in the provider's shape, counted in
  ``safeguards_csp_extproc_denied_total{reason}``. A match goes on with the normalised path.
  A bad or duplicate identity header is an immediate error; a blocked account is refused here.
- request body: the caller assertion is checked (``caller_auth``: it binds ``:method``,
  ``:path`` and the body); on a generating route, ``admit``: a refusal is an immediate answer
  (403/429/529), an intervention replaces the body. A body with no headers before it: a 500.
- response headers: first, on a generating route, the region nonce ledger's take of the
  assertion, sent at its check and answering while Envoy went upstream (``_unproven``): a
  replayed assertion or a required ledger's silence is an immediate 401/503 here, nothing of
  the answer passed or observed; then whether it streams; ``content-length`` dropped where the
  body may change.
- response body: for accounts under ``terminate_stream`` the completion is scored every
  ``gate.stream_classify_chars`` characters; past the threshold the chunk is cut at the crossing
  event, ends with ``stop_reason: "refusal"``, and later chunks are emptied. At end of stream the
  tokens are charged and telemetry queued.

Tracing on, a gated exchange is the proxy's request span, current while each of its messages
is handled, so its telemetry (and a batch's requests) carry its context.
Failures fail closed: an exception on any message is answered with an immediate 500
(``api_error``) on the open stream, never an ended stream (which Envoy's ``failure_mode_allow``
turns into an ungated request), counted in ``safeguards_csp_extproc_errors_total{stage}`` and
logged with its traceback but no exception message (one may quote the request).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from safeguards.adapters import tracing
from safeguards.adapters.csp import caller_auth as auth
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.batch_ledger import BatchRecords
from safeguards.adapters.csp.batches import BatchGate
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER, CallerAuth, one_assertion
from safeguards.adapters.csp.decision import TERMINATE_ACTION, Decision, refusal
from safeguards.adapters.csp.extproc_batches import (
    BATCH_ROUTES,
    batch_exchange,
    batch_request_body,
    batch_response_body,
)
from safeguards.adapters.csp.extproc_config import ExtProcConfig as ExtProcConfig
from safeguards.adapters.csp.extproc_exchange import Exchange as _Exchange
from safeguards.adapters.csp.extproc_jobs import JobGate, job_exchange
from safeguards.adapters.csp.extproc_wire import (
    body_response,
    continue_headers,
    downstream_host,
    header,
    immediate,
    peer_host,
    redacted_traceback,
    text,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import IdentityHeaders
from safeguards.adapters.csp.inline_gate import InlineGate
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    completion_of,
    refusal_message,
    with_safety_prompt,
)
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.routes import Denied, Route, match
from safeguards.core.policy import Policy

log = logging.getLogger(__name__)
_BODILESS = frozenset((Route.MODELS, Route.BATCH_READ, Route.BATCH_RESULTS, Route.JOB_READ))
_TRACED = frozenset((Route.MESSAGES, Route.BEDROCK_INVOKE, Route.VERTEX_PREDICT,
                     Route.BATCH_CREATE, Route.BATCH_RESULTS))


class ExtProcService(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, config: ExtProcConfig, policy: Policy, gate: Gate, admission: Admission,
                 metrics: CspMetrics, identity: IdentityHeaders, caller_auth: CallerAuth,
                 batch_records: BatchRecords | None = None) -> None:
        self.config, self.policy, self.gate, self.admission = config, policy, gate, admission
        self.metrics, self.identity = metrics, identity
        self.caller_auth = caller_auth  # the region's nonce ledger after the host's table
        self.batches = BatchGate(admission, gate, metrics,
                                 classify_all_streams=config.classify_all_streams,
                                 records=batch_records)
        self.jobs = JobGate(self.batches)  # providers' batch jobs (provider_batch_jobs)
        self.guard = self.batches.guard  # the completion check every front end shares
        self.exchanges = 0

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: Any) -> AsyncIterator[pb.ProcessingResponse]:
        self.exchanges += 1
        ex = _Exchange(peer=peer_host(context))
        try:
            async for message in request_iterator:
                response = await self._answer(ex, message)
                yield response
                if response.HasField("immediate_response"):
                    return
        finally:
            try:
                with tracing.current(ex.span):
                    self._observe(ex)
            except Exception as exc:  # the answer is out: count and log, the stream ends well
                self._failed("observe", exc, answered=False)
            if ex.span is not None:
                ex.span.end()

    async def _answer(self, ex: _Exchange, message: pb.ProcessingRequest
                      ) -> pb.ProcessingResponse:
        """``_handle``'s answer, or a fail-closed 500 where it raised: an ended stream would let
        Envoy's ``failure_mode_allow`` pass the request ungated."""
        try:
            with tracing.current(ex.span):
                return await self._handle(ex, message)
        except Exception as exc:
            if ex.span is not None:
                tracing.failed(ex.span, exc)
            self._failed(message.WhichOneof("request") or "unknown", exc)
            return immediate(500, "the safety gate failed on this request", api=ex.call.api)

    def _failed(self, stage: str, exc: Exception, *, answered: bool = True) -> None:
        self.metrics.extproc_errors.labels(stage).inc()
        log.error("ext_proc failed handling %s%s\n%s", stage,
                  "; answered 500" if answered else " after the answer", redacted_traceback(exc))

    async def _handle(self, ex: _Exchange, message: pb.ProcessingRequest) -> pb.ProcessingResponse:
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            downstream = downstream_host(message)
            if downstream is not None:  # Envoy names the client: judge it, not Envoy itself
                ex.peer = downstream
            return await self._request_headers(ex, message.request_headers)
        if kind == "request_body":
            return await self._request_body(ex, message.request_body)
        if kind == "response_headers":
            return await self._response_headers(ex, message.response_headers)
        if kind == "response_body":
            return await self._response_body(ex, message.response_body)
        if kind in ("request_trailers", "response_trailers"):
            return pb.ProcessingResponse(**{kind: pb.TrailersResponse()})
        raise ValueError(f"unexpected ext_proc message {kind!r}")

    async def _request_headers(self, ex: _Exchange, headers: pb.HttpHeaders
                               ) -> pb.ProcessingResponse:
        ex.request_line = (header(headers.headers, ":method") or "",
                           header(headers.headers, ":path") or "")
        target = match(*ex.request_line, batches=True)
        if isinstance(target, Denied):
            self.metrics.extproc_denied.labels(target.reason).inc()
            allow = (("allow", target.allow),) if target.allow else ()
            return immediate(target.status, target.message, *allow, api=target.api)
        ex.route, ex.call = target.route, target.call
        if tracing.TRACER is not None and target.route in _TRACED:
            batch = target.route in BATCH_ROUTES
            ex.span = tracing.start_request(target.call.api.name, None if batch else "chat",
                                            target.route.value if batch else None)
        if target.route in BATCH_ROUTES:
            ex.batch = batch_exchange(target.route, target.path, header(headers.headers, ":scheme"),
                                      header(headers.headers, ":authority"))
        ex.job = job_exchange(target.route, target.call.api, ex.request_line[0], target.path)
        ex.scanner = target.call.api.scanner()
        try:
            pairs = [(h.key.lower(), h.raw_value if h.raw_value else str(h.value))
                     for h in headers.headers.headers]
            ex.caller = target.call.caller(self.identity.caller(pairs))
            ex.identity = {k: text(v) for k, v in pairs if k in self.identity.names}
            ex.auth = [text(v) for k, v in pairs if k == "authorization"]
            ex.proof = one_assertion([text(v) for k, v in pairs if k == ASSERTION_HEADER])
            declared = header(headers.headers, "content-length")
            limit = self.config.max_body_bytes
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise BadRequest(413, f"request body exceeds {limit} bytes")
            if headers.end_of_stream:
                if target.route not in _BODILESS:
                    raise BadRequest(400, "request body is required")
                await self.caller_auth.verify(ex.identity, ex.proof, b"", ex.peer, time.time(),
                                              method=ex.request_line[0],
                                              target=ex.request_line[1])
        except BadRequest as exc:
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            return immediate(exc.status, str(exc), api=ex.call.api)
        if target.route is not Route.MODELS:
            # A blocked account is refused on its headers: Envoy need not buffer the body.
            standing = self.gate.peek(ex.caller.account, gate_now(), ex.caller.aggregates)
            if standing.status == 403:
                self.gate.count(standing)
                return self._refusal(standing, ex)
        return pb.ProcessingResponse(request_headers=continue_headers(
            path=target.forward, remove=("accept-encoding",) if ex.job else ()))  # job: read

    async def _request_body(self, ex: _Exchange, body: pb.HttpBody) -> pb.ProcessingResponse:
        if ex.route is None or ex.caller is None:
            # No request headers came first (a filter that skips them): nothing to route by.
            self.metrics.extproc_denied.labels("no_request_headers").inc()
            return immediate(500, "the safety gate saw no request headers", api=ex.call.api)
        ex.body += body.body
        try:
            if len(ex.body) > self.config.max_body_bytes:
                raise BadRequest(413, f"request body exceeds {self.config.max_body_bytes} bytes")
            if not body.end_of_stream:
                return pb.ProcessingResponse(request_body=body_response())
            ex.pending = self.caller_auth.begin(ex.identity, ex.proof, bytes(ex.body), ex.peer,
                                                time.time(), method=ex.request_line[0],
                                                target=ex.request_line[1])
            if ex.batch is not None or ex.job is not None or not ex.route.generates:
                await auth.settle(ex.pending)
                ex.pending = None
            if ex.batch is not None:
                return await batch_request_body(self.batches, ex.batch, ex.caller, bytes(ex.body))
            if ex.job is not None and not ex.job.poll:  # each record of the job's input checked
                return await ex.job.request_body(self.jobs, ex.caller, ex.body, ex.auth)
            if not ex.route.generates:  # generates nothing: checked on its headers
                return pb.ProcessingResponse(request_body=body_response())
            admitted = await self.admission.admit(ex.caller, bytes(ex.body), "ext_proc",
                                                  ex.call)
        except BadRequest as exc:
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            return immediate(exc.status, str(exc), api=ex.call.api)
        ex.admitted = admitted
        decision = admitted.decision
        ex.action = decision.action
        ex.guarded = self.guard.guarded(decision)
        if decision.refused:  # a replayed assertion is a 401, not the account's refusal
            unproven = await self._unproven(ex)
            return self._refusal(decision, ex) if unproven is None else unproven
        if decision.safety_prompt:
            new_body = json.dumps(with_safety_prompt(admitted.doc)).encode()
            return pb.ProcessingResponse(request_body=body_response(new_body, content_length=True))
        return pb.ProcessingResponse(request_body=body_response())

    def _refusal(self, decision: Decision, ex: _Exchange) -> pb.ProcessingResponse:
        message, extra = refusal(decision)
        return immediate(decision.status, message, *extra,
                         ("x-safeguards-action", decision.action), api=ex.call.api)

    async def _unproven(self, ex: _Exchange) -> pb.ProcessingResponse | None:
        """The caller's refusal where the region's ledger refuses its assertion (nothing of the
        answer passes, the request is not observed), else None once it has taken it."""
        try:
            await auth.settle(ex.pending)
        except BadRequest as exc:
            ex.admitted = None
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            return immediate(exc.status, str(exc), api=ex.call.api)
        finally:
            ex.pending = None
        return None

    async def _response_headers(self, ex: _Exchange, headers: pb.HttpHeaders
                                ) -> pb.ProcessingResponse:
        if (unproven := await self._unproven(ex)) is not None:
            return unproven
        content_type = header(headers.headers, "content-type") or ""
        media = ex.call.api.stream_content_type.split(b";", 1)[0].decode()
        ex.streaming = content_type.startswith(media)
        status = header(headers.headers, ":status") or "200"
        if ex.batch is not None:  # its answer is held back and rewritten whole
            ex.batch.status = status
            return pb.ProcessingResponse(response_headers=continue_headers(
                remove=("content-length",)))
        if ex.job is not None:
            ex.job.status = status
        if status != "200":
            ex.guarded = False
        remove = ("content-length",) if ex.guarded else ()
        return pb.ProcessingResponse(response_headers=continue_headers(remove=remove))

    async def _response_body(self, ex: _Exchange, body: pb.HttpBody) -> pb.ProcessingResponse:
        if (unproven := await self._unproven(ex)) is not None:  # response headers skipped
            return unproven
        if ex.batch is not None and ex.caller is not None:
            return await batch_response_body(self.batches, ex.batch, ex.caller, body)
        if ex.job is not None and ex.caller is not None:
            return await ex.job.response_body(self.jobs, ex.caller, body, ex.auth,
                                              self.config.max_body_bytes)
        if ex.admitted is None:
            return pb.ProcessingResponse(response_body=body_response())
        if ex.terminated:
            return pb.ProcessingResponse(response_body=body_response(clear=True))
        if ex.streaming:
            return pb.ProcessingResponse(response_body=await self._stream_chunk(ex, body))
        ex.response_body += body.body
        if not body.end_of_stream:
            return pb.ProcessingResponse(response_body=body_response())
        try:
            doc = json.loads(bytes(ex.response_body))
        except (ValueError, UnicodeDecodeError):
            return pb.ProcessingResponse(response_body=body_response())
        completion, tokens_in, tokens_out = completion_of(doc)
        ex.scanner.input_tokens, ex.scanner.output_tokens = tokens_in, tokens_out
        ex.scanner.text = [completion]
        if ex.guarded and completion and isinstance(doc, dict) and await self.guard.ends(
                ex.admitted.request, ex.admitted.decision.level, completion):
            self._terminated(ex)
            return pb.ProcessingResponse(response_body=body_response(
                json.dumps(refusal_message(doc)).encode()))
        return pb.ProcessingResponse(response_body=body_response())

    async def _stream_chunk(self, ex: _Exchange, body: pb.HttpBody) -> pb.BodyResponse:
        assert ex.admitted is not None
        scanner = ex.scanner
        events = scanner.feed(body.body)
        if not ex.guarded:
            return body_response()
        out = b""
        every = self.gate.policy.gate.stream_classify_chars  # the policy in force now
        for raw, added in events:
            if added and scanner.text_chars - ex.checked_at >= every:
                ex.checked_at = scanner.text_chars
                if await self.guard.ends(ex.admitted.request, ex.admitted.decision.level,
                                         scanner.completion()):
                    self._terminated(ex)
                    return body_response(out + scanner.refusal_events())
            out += raw
        if body.end_of_stream:
            out += scanner.pending
        # Complete events go on now; a partial one waits for the next chunk.
        return body_response(out)

    def _terminated(self, ex: _Exchange) -> None:
        """Its completion withheld (scored and counted by ``answers.CompletionGuard``)."""
        ex.terminated = True
        ex.action = TERMINATE_ACTION

    def _observe(self, ex: _Exchange) -> None:
        if ex.batch is not None:
            ex.batch.ended(self.batches)
        if ex.job is not None:
            ex.job.ended(self.jobs)
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
        self.inline = InlineGate(policy, config, connection_name="safeguards-extproc",
                                 peers=config.peer_regions)
        i = self.inline
        self.gate, self.link, self.feed, self.telemetry = i.gate, i.link, i.feed, i.telemetry
        self.classifier, self.metrics, self.admission = i.classifier, i.metrics, i.admission
        self.service = ExtProcService(config, policy, self.gate, self.admission, self.metrics,
                                      i.identity, i.caller_auth, i.batch_records)
        self.port: int | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ExtProcServer]:
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(self.service, server)
        self.port = server.add_insecure_port(self.config.listen)
        # ended jobs' outputs observed off their polls' path (job_outputs), drained on exit
        async with self.inline.running(), self.service.jobs.outputs.running(
                self.config.job_outputs_drain_s):
            await server.start()
            try:
                yield self
            finally:
                with anyio.move_on_after(5, shield=True):
                    await server.stop(grace=1.0)
                    await self.service.batches.shut_down(self.config.publish_timeout_s)


async def serve_extproc(config: ExtProcConfig, policy: Policy) -> None:
    server = ExtProcServer(replace(config, freeze_gc_after_sync=True), policy)
    async with server.running():
        if config.metrics_port:
            from prometheus_client import start_http_server

            host = config.listen.rsplit(":", 1)[0] or "127.0.0.1"
            start_http_server(config.metrics_port, addr=host, registry=server.metrics.registry)
        log.info("ext_proc listening on %s", config.listen)
        await anyio.sleep_forever()
