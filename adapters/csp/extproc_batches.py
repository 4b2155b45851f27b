"""Message Batches behind Envoy: ext_proc applies the proxy's batch gate (``batches``).

Creation: the request body (buffered) is replaced by the batch the model may see: refused
requests withheld (their errored results kept for the results), intervened ones with the safety
prompt; if every request is refused, the creation is refused at once. The response (the batch
object) is held back and answered whole with ``results_url`` on the client's authority, and the
batch's admissions are remembered. Results: the JSON Lines are held back and answered whole,
checked, observed once and with the refused requests' results spliced in; a creation the
upstream did not take has its admitted requests observed as not served when the exchange ends
(``BatchExchange.ended``). Holding the body back works whether Envoy streams or buffers it:
each chunk is emptied, the last carries the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from safeguards.adapters.csp.batch_routes import batch_id_of, with_results_url
from safeguards.adapters.csp.batches import BatchGate, Submission
from safeguards.adapters.csp.decision import refusal
from safeguards.adapters.csp.extproc_wire import body_response, immediate
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.routes import Route

BATCH_ROUTES = frozenset((Route.BATCH_CREATE, Route.BATCH_READ, Route.BATCH_RESULTS))


@dataclass(slots=True)
class BatchExchange:
    """What a batch exchange keeps between ext_proc messages."""

    route: Route
    base_url: str  # the client's scheme and authority (results_url points there)
    batch_id: str = ""  # the results route's batch
    submission: Submission | None = None
    status: str = "200"
    body: bytearray = field(default_factory=bytearray)

    def ended(self, batches: BatchGate) -> None:
        """The exchange is over: a creation the upstream did not take (no batch id seen) has
        its admitted requests observed as requests not served."""
        if self.submission is not None and not self.submission.entry.batch_id:
            batches.unserved(self.submission.entry)


def batch_exchange(route: Route, path: str, scheme: str | None,
                   authority: str | None) -> BatchExchange:
    """A batch route's exchange (``path`` normalised by the route table)."""
    batch_id = path.split("/")[4] if route is Route.BATCH_RESULTS else ""
    return BatchExchange(route, f"{scheme or 'http'}://{authority or 'localhost'}", batch_id)


async def batch_request_body(batches: BatchGate, ex: BatchExchange, caller: Caller,
                             body: bytes) -> pb.ProcessingResponse:
    """The creation's body (whole): the batch as the model may see it, or a refusal."""
    if ex.route is not Route.BATCH_CREATE:
        return pb.ProcessingResponse(request_body=body_response())
    submission = await batches.submit(caller, body)
    if submission.body is None:
        decision = submission.first_refusal
        assert decision is not None
        message, extra = refusal(decision)
        return immediate(decision.status, message, *extra,
                         ("x-safeguards-action", decision.action))
    ex.submission = submission
    return pb.ProcessingResponse(request_body=body_response(submission.body,
                                                            content_length=True))


async def batch_response_body(batches: BatchGate, ex: BatchExchange, caller: Caller,
                              body: pb.HttpBody) -> pb.ProcessingResponse:
    """Hold the answer back to its end, then answer it whole (checked, rewritten)."""
    ex.body += body.body
    if not body.end_of_stream:
        return pb.ProcessingResponse(response_body=body_response(b""))
    answer = bytes(ex.body)
    if ex.status != "200":
        return pb.ProcessingResponse(response_body=body_response(answer))
    if ex.route is Route.BATCH_RESULTS:
        answer = await batches.results(ex.batch_id, caller, answer)
    else:
        batch_id = batch_id_of(answer)
        if ex.submission is not None and batch_id is not None:
            await batches.remember(batch_id, ex.submission.entry)
        answer = with_results_url(answer, ex.base_url)
    return pb.ProcessingResponse(response_body=body_response(answer))
