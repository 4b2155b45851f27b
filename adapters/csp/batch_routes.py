"""The Message Batches routes on the HTTP proxy (``/v1/messages/batches`` and below), around the
batch gate (``batches.BatchGate``): a creation's requests admitted and the batch the model may see
sent upstream, its admitted requests remembered under the upstream's batch id, or observed as
requests not served where the upstream did not take it (an error, a failure, an answer without a
batch id); results checked and observed; the other routes refused to a blocked account. Batch
objects are answered with ``results_url`` on this proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, Protocol

from safeguards.adapters.csp.answers import Receive, Scope, Send, respond, send_failure
from safeguards.adapters.csp.batches import BatchGate, Submission
from safeguards.adapters.csp.decision import BLOCK, Decision
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.provider_api import (
    MESSAGES_API,
    UPSTREAM_FAILURES,
    ProviderApi,
)
from safeguards.adapters.csp.routes import Route, Target
from safeguards.adapters.csp.upstream_client import UpstreamClient, UpstreamResponse


def with_results_url(body: bytes, base_url: str) -> bytes:
    """A batch object (or a list of them) with ``results_url`` on this proxy."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(doc, dict):
        return body
    listed = doc.get("data")
    batches: list[Any] = listed if isinstance(listed, list) else [doc]
    for batch in batches:
        if isinstance(batch, dict) and isinstance(batch.get("id"), str) and batch.get(
                "results_url"):
            batch["results_url"] = f"{base_url}/v1/messages/batches/{batch['id']}/results"
    return json.dumps(doc).encode()


class BatchProxy(Protocol):
    """What the batch routes use of the HTTP proxy (``proxy.CspProxy``)."""

    batches: BatchGate
    gate: Gate
    metrics: CspMetrics

    @property
    def upstream_client(self) -> UpstreamClient: ...
    async def _caller_and_body(self, scope: Scope, receive: Receive
                               ) -> tuple[Caller, bytes | None, list[tuple[bytes, bytes]]]: ...
    async def _upstream(self, send: Send, call: Awaitable[UpstreamResponse],
                        api: ProviderApi = ...) -> UpstreamResponse | None: ...
    async def _refuse(self, send: Send, decision: Decision, api: ProviderApi = ...) -> None: ...
    async def refused_by_standing(self, send: Send, caller: Caller, api: ProviderApi
                                  ) -> bool: ...
    async def _upstream_answer(self, send: Send, response: UpstreamResponse,
                               api: ProviderApi = ...) -> bytes | None: ...


async def serve_batch(proxy: BatchProxy, scope: Scope, receive: Receive, send: Send,
                      target: Target) -> None:
    """``/v1/messages/batches`` and below, on the HTTP proxy."""
    caller, body, forward = await proxy._caller_and_body(scope, receive)
    if body is None:
        return  # the client went away
    route = target.route
    submission = None
    if route is Route.BATCH_CREATE:
        submission = await proxy.batches.submit(caller, body)
        if submission.body is None:
            assert submission.first_refusal is not None
            await proxy._refuse(send, submission.first_refusal)
            return
        body = submission.body
    else:  # a blocked account may not read, cancel or delete batches either
        standing = proxy.gate.peek(caller.account, gate_now(), caller.aggregates)
        if standing.flags & BLOCK:
            proxy.gate.count(standing)
            await proxy._refuse(send, standing)
            return
    try:
        await _forward(proxy, scope, send, target, caller, body, forward, submission)
    finally:
        if submission is not None and not submission.entry.batch_id:  # the upstream's failure
            proxy.batches.unserved(submission.entry)


async def _forward(proxy: BatchProxy, scope: Scope, send: Send, target: Target, caller: Caller,
                   body: bytes, forward: list[tuple[bytes, bytes]],
                   submission: Submission | None) -> None:
    route = target.route
    forward.append((b"accept-encoding", b"identity"))
    response = await proxy._upstream(send, proxy.upstream_client.request(
        scope["method"].encode(), (target.forward or target.path).encode("latin-1"), body,
        forward))
    if response is None:
        return
    try:
        answer = await proxy._upstream_answer(send, response)
        if answer is None:
            return
        status = response.status  # an error status here is the upstream's own, passed on
        if status < 300 and route is Route.BATCH_RESULTS:
            answer = await proxy.batches.results(target.path.split("/")[4], caller, answer)
        elif status < 300:
            if submission is not None:
                batch_id = batch_id_of(answer)
                if batch_id is None:
                    proxy.metrics.upstream_errors.labels("bad_json").inc()
                    await send_failure(send, MESSAGES_API, UPSTREAM_FAILURES["malformed"])
                    return
                await proxy.batches.remember(batch_id, submission.entry)
            answer = with_results_url(answer, _base_url(scope))
        content_type = response.headers.get(b"content-type", b"application/json")
        await respond(send, status, answer, (b"content-type", content_type))
    finally:
        await response.aclose()


def batch_id_of(answer: bytes) -> str | None:
    try:
        created = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None
    batch_id = created.get("id") if isinstance(created, dict) else None
    return batch_id if isinstance(batch_id, str) else None


def _base_url(scope: Scope) -> str:
    host = next((v for k, v in scope["headers"] if k == b"host"), b"localhost")
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"
