"""What one ext_proc exchange (one HTTP request and its answer) has shown so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.trace import Span

from safeguards.adapters.csp.admission import Admitted
from safeguards.adapters.csp.caller_auth import PendingNonce
from safeguards.adapters.csp.extproc_batches import BatchExchange
from safeguards.adapters.csp.extproc_jobs import JobExchange
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.provider_api import MESSAGES_CALL, ProviderCall, StreamScanner
from safeguards.adapters.csp.routes import Route


@dataclass(slots=True)
class Exchange:
    """What one HTTP exchange has shown so far."""

    caller: Caller | None = None
    identity: dict[str, str] = field(default_factory=dict)  # the identity headers as sent
    proof: str | None = None  # the caller assertion
    request_line: tuple[str, str] = ("", "")  # :method and :path, bound by the assertion
    peer: str | None = None  # the front door's address (the gRPC peer)
    auth: list[str] = field(default_factory=list)  # Authorization: reads a Vertex job's input
    route: Route | None = None  # the route table's match (None: no request headers seen)
    call: ProviderCall = MESSAGES_CALL  # the provider's API the route speaks
    body: bytearray = field(default_factory=bytearray)
    admitted: Admitted | None = None
    streaming: bool = False
    guarded: bool = False
    response_body: bytearray = field(default_factory=bytearray)
    scanner: StreamScanner = field(default_factory=MESSAGES_CALL.api.scanner)
    checked_at: int = 0
    action: str = ""
    terminated: bool = False
    observed: bool = False
    batch: BatchExchange | None = None  # a Message Batches route (extproc_batches)
    job: JobExchange | None = None  # a provider's batch job's creation or get (extproc_jobs)
    span: Span | None = None  # the request's span (tracing on, a gated route)
    # the region nonce ledger's take, settled before anything of the answer passes
    pending: PendingNonce | None = None
