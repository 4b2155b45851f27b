"""The Anthropic Messages-compatible reverse proxy: the gate in front of an upstream model.

A raw ASGI app (served by uvicorn) with one pooled HTTP/1.1 client to the upstream. Per request:
validate the account header and the body, ``check`` the gate, classify synchronously when the
account's level asks for it, then refuse in Anthropic's error format or forward (with the safety
system prompt when intervening). The answer goes back through ``answers.AnswerRelay``: whole, or
event by event for SSE, with the completion checks of ``terminate_stream``. Telemetry leaves after
the response, through the bounded buffer. No prompt or completion text is ever logged or echoed
in an error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from safeguards.adapters import tracing
from safeguards.adapters.csp import caller_auth as auth
from safeguards.adapters.csp.answers import (
    JSON_HEADER,
    AnswerRelay,
    Receive,
    Scope,
    Send,
    action_header,
    read_body,
    respond,
    send_api_error,
    send_failure,
)
from safeguards.adapters.csp.batch_routes import serve_batch
from safeguards.adapters.csp.batches import BatchGate
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER
from safeguards.adapters.csp.decision import BLOCK, Decision, GateRequest, refusal
from safeguards.adapters.csp.front_end_config import FrontEndConfig
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.inline_gate import InlineGate
from safeguards.adapters.csp.messages_api import (
    BadRequest,
    parse_messages_request,
    with_safety_prompt,
)
from safeguards.adapters.csp.provider_api import (
    MESSAGES_API,
    UPSTREAM_FAILURES,
    ProviderApi,
    upstream_status_failure,
)
from safeguards.adapters.csp.provider_batch_jobs import JobGate, serve_job
from safeguards.adapters.csp.routes import Denied, Route, Target, match
from safeguards.adapters.csp.upstream_client import (
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from safeguards.core.policy import Policy

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    b"accept-encoding", b"content-encoding",
})
_ASSERTION = ASSERTION_HEADER.encode()  # checked here, never forwarded
_BATCH_ROUTES = frozenset((Route.BATCH_CREATE, Route.BATCH_READ, Route.BATCH_RESULTS))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig(FrontEndConfig):
    upstream_url: str
    upstream_connect_timeout_s: float = 5.0
    upstream_read_timeout_s: float = 120.0
    upstream_pool: int = 256
    job_outputs_drain_s: float = 5.0  # a shutdown's wait for jobs' outputs being observed
    provision_streams: bool = False  # create missing gate streams (stand-alone demos and tests)


class CspProxy:
    """ASGI application; ``running()`` owns its background tasks (or ASGI lifespan does)."""

    def __init__(self, config: ProxyConfig, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        self.inline = InlineGate(policy, config, connection_name="safeguards-proxy",
                                 provision_streams=config.provision_streams,
                                 peers=config.peer_regions)
        i = self.inline
        self.gate, self.link, self.feed, self.telemetry = i.gate, i.link, i.feed, i.telemetry
        self.classifier, self.metrics, self.identity = i.classifier, i.metrics, i.identity
        self.caller_auth = i.caller_auth  # the region's nonce ledger after the host's table
        self.admission = i.admission
        self._client: UpstreamClient | None = None
        self.answers = AnswerRelay(self.admission, self.gate, self.metrics, policy,
                                   classify_all_streams=config.classify_all_streams)
        self.batches = BatchGate(self.admission, self.gate, self.metrics,
                                 classify_all_streams=config.classify_all_streams,
                                 records=i.batch_records)
        self.jobs = JobGate(self.batches)  # providers' batch jobs (provider_batch_jobs)

    # --- lifetime -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CspProxy]:
        client = UpstreamClient(self.config.upstream_url, pool=self.config.upstream_pool,
                                connect_timeout_s=self.config.upstream_connect_timeout_s,
                                read_timeout_s=self.config.upstream_read_timeout_s)
        self._client = client
        try:
            async with self.inline.running():
                # ended jobs' outputs observed off their polls' path (job_outputs)
                async with self.jobs.outputs.running(self.config.job_outputs_drain_s):
                    yield self
                # a restart: unread batches' prompts are scored now, not lost with this process
                await self.batches.shut_down(self.config.publish_timeout_s)
        finally:
            self._client = None
            await client.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with self.running():
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        await send({"type": "lifespan.shutdown.complete"})

    # --- routing --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/metrics" and method == "GET":
            await respond(send, 200, self.metrics.render(),
                           (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"))
            return
        if path in ("/healthz", "/readyz") and method == "GET":
            # /healthz: the process is alive (always 200). /readyz: 503 until the gate holds
            # its region's enforcement (read from the stream or a verified local snapshot).
            staleness = self.gate.staleness(gate_now())
            ready = self.gate.synced
            body = json.dumps({
                "ready": ready, "pid": os.getpid(),  # which worker process answered
                "stream_synced": bool(self.feed is not None and self.feed.ready.is_set()),
                "nats_connected": bool(self.link is not None and self.link.is_connected),
                "cache_accounts": self.gate.size,
                "cache_staleness_s": None if math.isinf(staleness) else round(staleness, 3),
                "telemetry_dropped": self.telemetry.dropped_total,
            }).encode()
            await respond(send, 503 if path == "/readyz" and not ready else 200, body,
                          JSON_HEADER)
            return
        # Deny by default, as ext_proc does: the route table (``routes``) on the normalised path.
        raw = scope.get("raw_path") or path.encode("latin-1")
        query = scope.get("query_string", b"")
        target = match(method, (raw + b"?" + query if query else raw).decode("latin-1"),
                       batches=True)
        if isinstance(target, Denied):
            allow = ((b"allow", target.allow.encode()),) if target.allow else ()
            await send_api_error(send, target.api, target.status, target.message, allow)
            return
        try:
            if target.route in _BATCH_ROUTES:
                if tracing.TRACER is None or target.route is Route.BATCH_READ:
                    await serve_batch(self, scope, receive, send, target)
                else:
                    await self._traced(serve_batch(self, scope, receive, send, target), target)
            elif target.route in (Route.JOB_CREATE, Route.JOB_READ):
                await serve_job(self, scope, receive, send, target)
            elif target.route.generates:
                if tracing.TRACER is None:
                    await self._generate(scope, receive, send, target)
                else:
                    await self._traced(self._generate(scope, receive, send, target), target)
            else:
                await self._passthrough(scope, receive, send, target)
        except BadRequest as exc:
            self.metrics.rejected_requests.labels(str(exc.status)).inc()
            await send_api_error(send, target.call.api, exc.status, str(exc))

    @property
    def upstream_client(self) -> UpstreamClient:
        assert self._client is not None, "the proxy serves only inside running()"
        return self._client

    async def _upstream(self, send: Send, call: Awaitable[UpstreamResponse],
                        api: ProviderApi = MESSAGES_API) -> UpstreamResponse | None:
        """The upstream's response, or None once its failure has been answered (the one table
        of upstream failures, ``provider_api.UPSTREAM_FAILURES``)."""
        try:
            return await call
        except UpstreamTimeout:
            self.metrics.upstream_errors.labels("timeout").inc()
            await send_failure(send, api, UPSTREAM_FAILURES["timeout"])
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()
            await send_failure(send, api, UPSTREAM_FAILURES["unreachable"])
        return None

    async def _upstream_answer(self, send: Send, response: UpstreamResponse,
                               api: ProviderApi = MESSAGES_API) -> bytes | None:
        """A whole (unstreamed) upstream answer, or None once its failure has been answered: cut
        off while reading, or an error status whose body is not in the provider's own shape
        (one in that shape is passed on as it is)."""
        try:
            answer = await response.read()
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()
            await send_failure(send, api, UPSTREAM_FAILURES["cut_off"])
            return None
        if response.status >= 300:
            self.metrics.upstream_errors.labels(f"status_{response.status}").inc()
            if not api.is_own_error(answer):
                await send_failure(send, api, upstream_status_failure(response.status))
                return None
        return answer

    # --- /v1/messages, Bedrock's invoke, Vertex's rawPredict --------------------------------

    async def _caller_and_body(self, scope: Scope, receive: Receive
                               ) -> tuple[Caller, bytes | None, list[tuple[bytes, bytes]]]:
        """The validated caller, the body (None: the client went away) and the headers to
        forward (the identity headers and hop-by-hop ones stay here); the caller proven."""
        caller, body, forward, pending = await self._caller_pending(scope, receive)
        await auth.settle(pending)
        return caller, body, forward

    async def _caller_pending(self, scope: Scope, receive: Receive) -> tuple[
            Caller, bytes | None, list[tuple[bytes, bytes]], auth.PendingNonce | None]:
        """``_caller_and_body``, the ledger's answer to come: ``settle`` it before answering."""
        identity: list[tuple[str, bytes]] = []
        declared: bytes | None = None
        forward: list[tuple[bytes, bytes]] = []
        proofs: list[bytes] = []
        identity_names = self.identity.raw_names
        for name, value in scope["headers"]:
            if name in identity_names:
                identity.append((name.decode("latin-1"), value))
            elif name == _ASSERTION:
                proofs.append(value)
            elif name == b"content-length":
                declared = value
            elif name not in _HOP_BY_HOP:
                forward.append((name, value))
        caller = self.identity.caller(identity)
        limit = self.config.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise BadRequest(413, f"request body exceeds {limit} bytes")
        body = await read_body(receive, limit)
        if body is not None:
            if len(proofs) > 1:
                raise BadRequest(400, f"duplicate {ASSERTION_HEADER} header")
            peer = scope.get("client")
            raw = scope.get("raw_path") or scope["path"].encode("latin-1")
            query = scope.get("query_string", b"")
            pending = self.caller_auth.begin(
                {n: v.decode("latin-1") for n, v in identity},
                proofs[0].decode("latin-1") if proofs else None, body,
                peer[0] if peer else None, time.time(), method=scope["method"],
                target=(raw + b"?" + query if query else raw).decode("latin-1"))
            return caller, body, forward, pending
        return caller, body, forward, None

    async def _generate(self, scope: Scope, receive: Receive, send: Send,
                        target: Target) -> None:
        call, api = target.call, target.call.api
        caller, body, forward, pending = await self._caller_pending(scope, receive)  # ledger: later
        if body is None:
            return  # the client went away
        admitted = await self.admission.admit(call.caller(caller), body, "proxy", call)
        request, decision, doc, prompt = (admitted.request, admitted.decision, admitted.doc,
                                          admitted.prompt)
        if decision.refused:
            await auth.settle(pending)  # a replayed assertion is a 401, not the account's refusal
            await self._refuse(send, decision, api)
            self._observe(request, decision.action, 0, 0, prompt, "")
            return
        if decision.safety_prompt:
            body = json.dumps(with_safety_prompt(doc)).encode()
        forward.append((b"accept-encoding", b"identity"))
        assert self._client is not None, "the proxy serves only inside running()"
        response = await self._upstream(send, auth.settled_first(
            pending, self._client.post(target.path, body, forward), UpstreamResponse.aclose), api)
        if response is None:
            self._observe(request, decision.action, 0, 0, prompt, "")
            return
        media = api.stream_content_type.split(b";", 1)[0].decode()
        try:
            if response.status == 200 and response.content_type.startswith(media):
                await self.answers.stream(request, decision, response, receive, send, prompt,
                                          api)
            else:
                await self.answers.whole(request, decision, response, send, prompt, api)
        finally:
            await response.aclose()

    async def _traced(self, handling: Coroutine[Any, Any, None], target: Target) -> None:
        """``handling`` in the request's span (GenAI conventions; model, usage and action added
        where known, ``telemetry``; a batch's requests its children). No exception text."""
        batch = target.route in _BATCH_ROUTES
        span = tracing.start_request(target.call.api.name, None if batch else "chat",
                                     target.route.value if batch else None)
        try:
            with tracing.current(span):
                await handling
        except BaseException as exc:
            tracing.failed(span, exc)
            raise
        finally:
            span.end()

    # --- /v1/messages/count_tokens and /v1/models ----------------------------------------------

    async def _passthrough(self, scope: Scope, receive: Receive, send: Send,
                           target: Target) -> None:
        """Requests that generate nothing: the account header is checked like everywhere;
        count_tokens (POST) is refused for a blocked account but is not rate limited and sends
        no telemetry; the models list and lookup (GET) only need a valid account."""
        method, api = scope["method"], target.call.api
        caller, body, forward = await self._caller_and_body(scope, receive)
        if body is None:
            return  # the client went away
        caller = target.call.caller(caller)
        if method == "POST":  # count_tokens, in either shape
            parse_messages_request(body)  # malformed requests get the same 400s as /v1/messages
            if await self.refused_by_standing(send, caller, api):
                return
        forward.append((b"accept-encoding", b"identity"))
        assert self._client is not None, "the proxy serves only inside running()"
        response = await self._upstream(send, self._client.request(
            method.encode(), (target.forward or target.path).encode("latin-1"), body, forward),
            api)
        if response is None:
            return
        try:
            answer = await self._upstream_answer(send, response, api)
            if answer is None:
                return
            status = response.status
            headers = [JSON_HEADER]
            request_id = response.headers.get(b"request-id")
            if request_id:
                headers.append((b"request-id", request_id))
            await respond(send, status, answer, *headers)
        finally:
            await response.aclose()

    async def refused_by_standing(self, send: Send, caller: Caller, api: ProviderApi) -> bool:
        """Refuses (and counts) a blocked account's request by its standing alone, for routes
        that are not rate limited or screened; True when it did."""
        decision = self.gate.peek(caller.account, gate_now(), caller.aggregates)
        if not decision.flags & BLOCK:
            return False
        self.gate.count(decision)
        await self._refuse(send, decision, api)
        return True

    async def _refuse(self, send: Send, decision: Decision,
                      api: ProviderApi = MESSAGES_API) -> None:
        message, extra = refusal(decision)
        await send_api_error(send, api, decision.status, message,
                             (*((k.encode(), v.encode()) for k, v in extra),
                              action_header(decision.action)))

    def _observe(self, request: GateRequest, action: str, tokens_in: int, tokens_out: int,
                 prompt: str, completion: str) -> None:
        """After the response: charge tokens, and queue the signal and the content."""
        self.admission.observe(request, action, tokens_in, tokens_out, prompt, completion)

