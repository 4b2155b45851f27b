"""What a Message Batch's results are checked and observed with, kept for the whole region.

A gate that admits a batch (``batches.BatchGate.submit``) holds its admitted requests in memory
until their results are read; ``BatchRecords`` also writes them to the region's batch ledger
(``bus.batch_bucket``) once the upstream has taken the batch, so that its results, first read on
another worker, another proxy host or after a restart, are checked under the decision each request
was admitted with and observed with its prompt's details, as on the admitting gate.

A record holds, per admitted request (by ``custom_id``): the admission's decision (action,
reason, level, flags, fallback: a table of the batch's distinct decisions, each request an index
into it), its model, whether it streamed, and its prompt's metadata as its RequestObserved
signal carries it (length, ``prompt_sha256`` digest under the region's link key, link key,
fallback); per refused request, the errored result the client gets (an error type and the gate's
message, which names no text); and the caller's account, organisation, project and API-key
fingerprint. Never the prompt's text: raw text lives only on the region's short-TTL content
stream (ARCHITECTURE, "Signals raw content never reaches"), and a batch's results are read up to
29 days later. So the admitting gate stores each admitted prompt on the content stream before it
answers the creation (``batch_prompts``), and a result is observed, on whichever gate reads it,
with every detail but the prompt's text. A prompt the content stream did not store then (counted)
is queued for scoring by the admitting process only (on its own first read of the results, on
forgetting the batch, or as it shuts down: ``BatchGate.shut_down``); only where the stream
refused it and that process then ends without a shutdown (a crash, a kill) is that prompt never
scored. The completion check itself needs no prompt text: it scores the completion under the
stored decision and the account's standing.

Encoding: compact JSON, zlib-compressed, split into values of ``CHUNK_BYTES`` (key
``<digest>-<n>``: 32 hex digits of BLAKE2b of the batch id, then the chunk's index; chunk 0 starts
with the chunk count), each sealed with the region's producer key bound to its subject (so a value
cannot be moved to another key, nor read off the server). Chunks past the first are written
before it, so that a reader that finds chunk 0 finds the rest. A record that cannot be written or
read in ``deadline_s`` is counted (``safeguards_csp_batch_ledger_errors_total{op,reason}``) and
logged at most once a minute: the batch stays in this process's memory (written) or its results
are checked by the caller's standing now (read), as before the ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import nats.errors
from nats.aio.client import Client as NATS
from opentelemetry.trace import SpanContext

from safeguards.adapters.bus.batch_bucket import CHUNK_BYTES, batch_direct_get, batch_subject
from safeguards.adapters.bus.producer_auth import ProducerKeys, Unsealable
from safeguards.adapters.csp.decision import Decision, GateRequest
from safeguards.adapters.csp.sparse_warning import EVERY_S, SparseWarning
from safeguards.adapters.csp.stored_publish import stored
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_DEADLINE_S = 0.5
LOG_EVERY_S = EVERY_S
_COUNT = struct.Struct(">H")  # chunk 0's chunk count
_CREATE = {"Nats-Expected-Last-Subject-Sequence": "0"}  # a KV create: no value under the key
Noted = Literal["noted", "already", "failed"]


@dataclass(slots=True)
class BatchItem:
    """An admitted request of a batch, as its result is checked and observed."""

    request: GateRequest
    decision: Decision
    prompt: str  # held until observed ("" once observed, or read from the region's ledger)
    trace: SpanContext | None = None  # its admission's span (tracing on): its result's parent


@dataclass(slots=True)
class BatchEntry:
    admitted: dict[str, BatchItem]
    refused: dict[str, dict[str, Any]]  # custom_id -> the errored result it gets
    observed: bool = False
    withheld: set[str] = field(default_factory=set)  # completions replaced by refusals
    scored: set[str] = field(default_factory=set)  # completions the classifier scored
    batch_id: str = ""  # the upstream's, once it took the batch
    account: str = ""  # the caller's (a record is used only for the account that made it)

    @property
    def held_chars(self) -> int:
        """The prompt text it holds until its results are read (what the ledger bounds)."""
        return 0 if self.observed else sum(len(a.prompt) for a in self.admitted.values())


def result_request_id(batch_id: str, custom_id: str) -> str:
    """The request id a batch's request is observed under: ``{batch_id}/{custom_id}`` (a
    digest of it past 128 characters), the same on every worker and after a restart, so that
    the account's actor and the classifier take its signal and scores once (their ids derive
    from it) whichever gate observes its result."""
    name = f"{batch_id}/{custom_id}"
    return name if len(name) <= 128 else "batch:" + hashlib.blake2b(
        name.encode(), digest_size=16).hexdigest()


def encode_entry(entry: BatchEntry) -> bytes:
    """``entry``'s record: compact JSON, compressed (no prompt text)."""
    decisions: dict[tuple[Any, ...], int] = {}
    items: dict[str, list[Any]] = {}
    first: GateRequest | None = None
    for custom_id, item in entry.admitted.items():
        d, r = item.decision, item.request
        first = first or r
        row = (d.action, d.reason, d.level, d.flags, d.fallback)
        index = decisions.setdefault(row, len(decisions))
        items[custom_id] = [index, r.model, int(r.streamed), r.prompt_chars, r.prompt_sha256,
                            r.prompt_link, r.fallback]
    doc = {"v": FORMAT, "a": entry.account, "s": first.surface if first else "",
           "o": first.organization_id if first else None,
           "p": first.project_id if first else None,
           "k": first.api_key_fingerprint if first else None,
           "d": list(decisions), "r": items, "x": entry.refused}
    # level 1: a third of level 6's time for 4% more bytes (1,000 entries: 1.1 ms vs 3.2 ms)
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


def decode_entry(batch_id: str, data: bytes) -> BatchEntry:
    """The entry a record describes, its results not yet observed here; raises ValueError on
    a record this format does not read."""
    doc = json.loads(zlib.decompress(data))
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise ValueError("not a batch record of this format")
    decisions = [Decision(a, reason, level, flags, fallback=fb)
                 for a, reason, level, flags, fb in doc["d"]]
    admitted: dict[str, BatchItem] = {}
    for custom_id, (index, model, streamed, chars, digest, link, fallback) in doc["r"].items():
        request = GateRequest(doc["a"], result_request_id(batch_id, custom_id), model=model,
                              streamed=bool(streamed), prompt_chars=chars, prompt_sha256=digest,
                              surface=doc["s"], organization_id=doc["o"], project_id=doc["p"],
                              api_key_fingerprint=doc["k"], prompt_link=link, rated=False)
        request.fallback = fallback
        admitted[custom_id] = BatchItem(request, decisions[index], "")
    return BatchEntry(admitted, dict(doc["x"]), batch_id=batch_id, account=doc["a"])


def record_key(batch_id: str, chunk: int) -> str:
    return f"{hashlib.blake2b(batch_id.encode(), digest_size=16).hexdigest()}-{chunk}"


def observed_key(name: str) -> str:
    """The ledger's key noting that ``name``'s results were observed."""
    return f"{hashlib.blake2b(name.encode(), digest_size=16).hexdigest()}-observed"


class BatchRecords:
    """The region's batch ledger, over the gate's own NATS connection."""

    def __init__(self, region: str, connection: Callable[[], NATS | None],
                 producer: ProducerKeys, *, deadline_s: float = DEFAULT_DEADLINE_S,
                 on_error: Callable[[str, str], None] | None = None) -> None:
        self.region = validate_region(region)
        self._connection = connection
        self.producer = producer
        self.deadline_s = deadline_s
        self.on_error = on_error
        self.errors: dict[tuple[str, str], int] = {}  # by (op, reason)
        self.written_bytes = 0  # the sealed values written (what the bucket holds)
        self._warning = SparseWarning(log, LOG_EVERY_S)

    async def put(self, entry: BatchEntry) -> bool:
        """Writes ``entry`` (its ``batch_id`` set) to the ledger; False, counted, where it
        could not."""
        data = encode_entry(entry)
        pieces = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        pieces[0] = _COUNT.pack(len(pieces)) + pieces[0]
        subjects = [batch_subject(self.region, record_key(entry.batch_id, n))
                    for n in range(len(pieces))]
        sealed = [self.producer.seal(s, p) for s, p in zip(subjects, pieces, strict=True)]
        failures: list[str] = []
        with anyio.move_on_after(self.deadline_s) as scope:
            async with anyio.create_task_group() as tg:
                for n in range(1, len(pieces)):
                    tg.start_soon(self._write, subjects[n], sealed[n], failures)
            if not failures:
                await self._write(subjects[0], sealed[0], failures)
        if scope.cancelled_caught:
            failures.append("timeout")
        if failures:
            self._note("put", failures[0])
            return False
        self.written_bytes += sum(len(s) for s in sealed)
        return True

    async def _write(self, subject: str, value: bytes, failures: list[str]) -> None:
        failure = await stored(self._connection(), subject, value, self.deadline_s,
                               no_stream="no_ledger")  # no_ledger: the bucket not provisioned
        if failure is not None:
            failures.append(failure)

    async def get(self, batch_id: str) -> BatchEntry | None:
        """The batch's record (None: none, or counted where it could not be read)."""
        nc = self._connection()
        if nc is None or not nc.is_connected:
            self._note("get", "disconnected")
            return None
        try:
            with anyio.fail_after(self.deadline_s):
                first = await self._read(nc, batch_id, 0)
                if first is None:
                    return None
                (count,) = _COUNT.unpack_from(first)
                pieces: list[bytes | Exception | None] = [first[_COUNT.size:]]
                pieces += [None] * (count - 1)
                async with anyio.create_task_group() as tg:
                    for n in range(1, count):
                        tg.start_soon(self._read_into, nc, batch_id, n, pieces)
            data = b""
            for piece in pieces:
                if isinstance(piece, Exception):
                    raise piece
                if piece is None:
                    raise ValueError("a batch record's chunk is missing")
                data += piece
            return decode_entry(batch_id, data)
        except TimeoutError:
            self._note("get", "timeout")
        except nats.errors.Error:
            self._note("get", "bus_error")
        except Unsealable:
            self._note("get", "unsealable")  # a key this region no longer trusts, or altered
        except (ValueError, KeyError, TypeError, struct.error, zlib.error):
            self._note("get", "malformed")
        return None

    async def mark_observed(self, name: str) -> Noted:
        """Notes in the ledger that ``name``'s results (a provider's job's output:
        ``job_outputs``) were observed, so that another gate does not observe them again:
        ``noted`` where this call wrote the note, ``already`` where another had (the write is
        a create: it expects no value under the key), ``failed``, counted, where it could not
        tell (the ledger did not answer or refused)."""
        subject = batch_subject(self.region, observed_key(name))
        failure: str | None = "timeout"
        with anyio.move_on_after(self.deadline_s):
            failure = await stored(self._connection(), subject,
                                   self.producer.seal(subject, b"observed"), self.deadline_s,
                                   headers=_CREATE, no_stream="no_ledger")
        if failure is None:
            return "noted"
        if failure == "jetstream_error" and await self.observed(name):
            return "already"  # the create found the key written: another gate's note
        self._note("mark", failure)
        return "failed"

    async def observed(self, name: str) -> bool:
        """Whether the ledger notes ``name``'s results as observed (False where it could not
        be read: counted, and the results are observed again, their ids the same)."""
        nc = self._connection()
        if nc is None or not nc.is_connected:
            self._note("observed", "disconnected")
            return False
        try:
            with anyio.fail_after(self.deadline_s):
                key = observed_key(name)
                reply = await nc.request(batch_direct_get(self.region, key), b"",
                                         timeout=self.deadline_s)
            status = reply.headers.get("Status") if reply.headers else None
            if status == "404":
                return False
            if status:
                raise nats.errors.Error(f"direct get: {status}")
            return self.producer.open(batch_subject(self.region, key), reply.data) == b"observed"
        except TimeoutError:
            self._note("observed", "timeout")
        except nats.errors.Error:
            self._note("observed", "bus_error")
        except Unsealable:
            self._note("observed", "unsealable")
        return False

    async def _read_into(self, nc: NATS, batch_id: str, n: int,
                         pieces: list[bytes | Exception | None]) -> None:
        """Chunk ``n`` into ``pieces`` (what it raised, in its place: a task group would
        otherwise wrap it)."""
        try:
            pieces[n] = await self._read(nc, batch_id, n)
        except (nats.errors.Error, Unsealable) as exc:
            pieces[n] = exc

    async def _read(self, nc: NATS, batch_id: str, n: int) -> bytes | None:
        key = record_key(batch_id, n)
        reply = await nc.request(batch_direct_get(self.region, key), b"",
                                 timeout=self.deadline_s)
        if reply.headers and reply.headers.get("Status") == "404":
            return None
        if reply.headers and reply.headers.get("Status"):
            raise nats.errors.Error(f"direct get: {reply.headers.get('Status')}")
        return self.producer.open(batch_subject(self.region, key), reply.data)

    def _note(self, op: str, reason: str) -> None:
        self.errors[(op, reason)] = self.errors.get((op, reason), 0) + 1
        if self.on_error is not None:
            self.on_error(op, reason)
        self._warning.note("the %s batch ledger failed to %s a record (%s; %d times since the "
                           "last note): those batches' results are checked by the caller's "
                           "standing on other gates", self.region, op, reason)
