"""Providers' batch jobs behind Envoy: ext_proc applies the proxy's job gate
(``provider_batch_jobs``) to the creation's buffered body; the body goes upstream unchanged when
every record of the job's input passes, else Envoy answers at once with the job's refusal in
the provider's shape (Bedrock's or Google's). The input is read with the job's authority, as on
the proxy: a Bedrock job's role, or the caller's own token (its ``Authorization`` header, which
Envoy sends with the request's headers) for a Vertex job."""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from safeguards.adapters.csp.extproc_wire import body_response, immediate
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.provider_api import ProviderApi
from safeguards.adapters.csp.provider_batch_jobs import JobGate as JobGate


async def job_request_body(jobs: JobGate, api: ProviderApi, caller: Caller,
                           body: bytes | bytearray, authorization: list[str]
                           ) -> pb.ProcessingResponse:
    """A job creation's body (whole): passed unchanged, or the job refused. ``authorization``:
    the request's ``Authorization`` header values. Raises ``BadRequest`` for a malformed job or
    input (ext_proc answers it in the provider's shape)."""
    refused = await jobs.check(caller, api, bytes(body), authorization)
    if refused is not None:
        return immediate(refused.status, refused.message, *refused.headers,
                         ("x-safeguards-action", refused.action), api=api)
    return pb.ProcessingResponse(request_body=body_response())
