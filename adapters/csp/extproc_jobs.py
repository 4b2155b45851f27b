"""Providers' batch jobs behind Envoy: ext_proc applies the proxy's job gate
(``provider_batch_jobs``) and observes the jobs' outputs as the proxy does (``job_outputs``).

Creation: the buffered body goes upstream unchanged when every record of the job's input passes,
else Envoy answers at once with the job's refusal in the provider's shape (Bedrock's or
Google's). The input is read with the job's authority, as on the proxy: a Bedrock job's role, or
the caller's own token (its ``Authorization`` header, which Envoy sends with the request's
headers) for a Vertex job. The creation's answer (the job's ARN or resource name) passes chunk by
chunk; its last chunk waits until the admitted records are remembered under the job's name
(``BatchGate.remember``: prompts on the content stream, the job in the region's batch ledger),
as the proxy answers a creation after it. A creation the upstream did not take (not a 200, an
answer with no job's name, an exchange that ended before its answer) has its admitted records
observed as requests not served when the exchange ends (``JobExchange.ended``).

Status polls (``GET`` of one job): the answer passes chunk by chunk, a copy kept (up to the
body limit); once whole, a 200 that says the job ended starts the observation of its output in
the background (``JobOutputs.poll``, the caller's token for a Vertex job), and the answer goes on
at once. So ext_proc needs the response's headers and body on these routes (``SEND`` and
``STREAMED`` or ``BUFFERED``, as for every route), and asks the upstream for an unencoded answer
(it drops ``accept-encoding`` on the job routes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from safeguards.adapters.csp.batch_ledger import BatchEntry
from safeguards.adapters.csp.extproc_wire import body_response, immediate
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.provider_api import ProviderApi
from safeguards.adapters.csp.provider_batch_jobs import JobGate as JobGate
from safeguards.adapters.csp.routes import Route

log = logging.getLogger(__name__)
_LISTS = ("/model-invocation-jobs", "/batchPredictionJobs")  # lists: no job's status to observe


@dataclass(slots=True)
class JobExchange:
    """What a job exchange keeps between ext_proc messages."""

    api: ProviderApi
    poll: bool  # a get of one job: its status
    entry: BatchEntry | None = None  # the creation's admitted records (until the upstream took)
    status: str = "200"
    answer: bytearray | None = field(default_factory=bytearray)  # None: over the limit

    async def request_body(self, jobs: JobGate, caller: Caller, body: bytes | bytearray,
                           authorization: list[str]) -> pb.ProcessingResponse:
        """A job creation's body (whole): passed unchanged, its admitted records kept for the
        answer, or the job refused. ``authorization``: the request's ``Authorization`` header
        values. Raises ``BadRequest`` for a malformed job or input (ext_proc answers it in the
        provider's shape)."""
        refused, self.entry = await jobs.admit(caller, self.api, bytes(body), authorization)
        if refused is not None:
            return immediate(refused.status, refused.message, *refused.headers,
                             ("x-safeguards-action", refused.action), api=self.api)
        return pb.ProcessingResponse(request_body=body_response())

    async def response_body(self, jobs: JobGate, caller: Caller, body: pb.HttpBody,
                            authorization: list[str], limit: int) -> pb.ProcessingResponse:
        """Each chunk of the answer passed as it comes; the last once the creation's records
        are remembered under the job's name, or a poll's ended job's observation started."""
        passed = pb.ProcessingResponse(response_body=body_response())
        if self.answer is None or self.status != "200":
            return passed
        self.answer += body.body
        if len(self.answer) > limit:
            self.answer = None
            jobs.counts["answer_too_large"] += 1
            log.warning("a batch job's answer exceeds %d bytes: passed unread", limit)
            return passed
        if not body.end_of_stream:
            return passed
        if self.entry is not None or self.poll:
            await jobs.answered(caller, self.api, self.entry, bytes(self.answer), authorization)
        return passed

    def ended(self, jobs: JobGate) -> None:
        """The exchange is over: a creation's admitted records the upstream did not take (no
        job's name seen) are observed as requests not served."""
        jobs.settled(self.entry)


def job_exchange(route: Route, api: ProviderApi, method: str, path: str) -> JobExchange | None:
    """A job route's exchange (``path`` normalised), where its answer matters: a creation, a
    get of one job; None for the others (lists, stop, cancel, delete)."""
    if route is Route.JOB_CREATE:
        return JobExchange(api, poll=False)
    if route is Route.JOB_READ and method == "GET" and not path.endswith(_LISTS):
        return JobExchange(api, poll=True)
    return None
