"""Providers' batch jobs' outputs, observed after the fact: each record's completion observed like a
Message Batch's result.

A job's output never passes through the gate: the provider writes each record's answer to the
job's output location (Bedrock: ``{outputDataConfig.s3OutputDataConfig.s3Uri}{job id}/``, one
``{input file}.out`` per input file, each line the record with its ``modelOutput`` or ``error``,
beside a ``manifest.json.out``; Vertex: ``outputInfo.gcsOutputDirectory``, ``*.jsonl`` files, each
line the record with its ``response``). So the gate observes a job's output when it learns that
the job has ended: a caller's poll of the job's status through the gate (Bedrock's
``GetModelInvocationJob``, Vertex's ``batchPredictionJobs.get``) answered with an ended state
(``DONE``). No background poll: the gate would need a caller's authority it does not hold
between requests (a Vertex job's output is read with the caller's own token), and a caller that
never polls learns of its job's end some other way that the gate cannot see; that job's records
stay observed as at their creation only (below).

Off the poll's path: the poll is answered as the upstream answered it, at once; the observation
runs in the background (``running``, the proxy's lifetime), at most ``in_flight`` at once per
process (a poll that finds them all busy is counted ``busy``: the next poll starts it), a job
already being observed here not started twice. The caller's token (Vertex) goes to the task its
own poll started and nowhere else; it is never kept. Each record's messages (its signal, its
completion, a prompt still held) are published by the observation itself, ``PUBLISHERS`` at
once, each awaiting JetStream's acknowledgement (``stored_publish``), not through the telemetry
buffer; the ledger's note (below) is written only once every record's messages were stored: a
process killed or cancelled mid-way, even just before its note, leaves the job to the next poll,
on any worker, which observes it again under the same ids (taken once: below), and a record not
stored (disconnected, refused, no acknowledgement in the telemetry's ``publish_timeout_s``)
stops the observation, unnoted, for the next poll. On a clean shutdown, the observations in
flight get ``drain_s`` to finish (their note written); those still running are cancelled,
unnoted, left for the next poll. Nothing here fails the poll: an output that cannot be read
(``AccessRefused``, missing, over the limits), a line that is not a record, a record not stored
(``unstored``), or an error of the task itself is counted in
``safeguards_csp_job_outputs_unobserved_total{reason}`` and logged without text (an error with
its traceback's frames, never its message).

Whose authority reads the output: the input's (``object_store``, ``gcs_store``): the job's role
for Bedrock (``roleArn``, assumed through STS), the polling caller's own bearer token for
Vertex; never the gate's (a confused deputy otherwise).

What is observed, and once: a job the gate admitted (on the HTTP proxy or behind Envoy) was
remembered at its creation as a Message Batch is (``BatchGate.remember``, under the job's ARN or
resource name: its records' request ids ``result_request_id(job, record_custom_id(record id))``,
their prompts stored on the content stream, the job recorded in the region's batch ledger). Each
output line's completion is observed under that record's request id, as a Message Batch's result is:
its tokens charged (once per job: below), its RequestObserved signal (metadata only) and its
completion stored for scoring on the content stream. The same ids on every worker and after a
restart: the account's actor takes the signal once (its inbox key is the signal id, ``req:<request
id>``), the classifier's score ids derive from the request id, and a job is observed once: this
process remembers it (``observed``, bounded), and the region's batch ledger notes it for the other
gates (``BatchRecords.mark_observed``; a note not written or not read is counted there, and another
gate then observes the output again, taken once by the actor, its completions scored again). The
records' tokens are charged to the account's token rate once per job: after the note, by the
observation whose note created it (the note is a create), not by one that found another's (a
re-observation: another worker's poll, a process killed before its note); where the ledger could not
say (no ledger, not reachable: counted) the observation charges, as a gate alone would. A process
killed between its note and its charge leaves the job uncharged. A job this gate does not know (its
record not in the ledger: its creation's answer not seen, another account's, an unreadable record)
has its completions observed by the caller's standing, counted in ``unknown``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import traceback
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from safeguards.adapters.csp.batch_ledger import result_request_id
from safeguards.adapters.csp.batches import BATCH_CALL, BatchGate
from safeguards.adapters.csp.decision import GateRequest, GateResponse
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.gcs_store import GcsReader
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.input_errors import (
    AccessRefused,
    InputTooLarge,
    ObjectStoreError,
    ObjectUnreadable,
)
from safeguards.adapters.csp.messages_api import completion_of
from safeguards.adapters.csp.object_store import S3Reader
from safeguards.adapters.csp.provider_api import ProviderApi
from safeguards.adapters.csp.stored_publish import stored
from safeguards.adapters.csp.vertex_api import VERTEX_API

log = logging.getLogger(__name__)

BEDROCK_DONE = frozenset(("Completed", "PartiallyCompleted", "Stopped", "Expired"))
VERTEX_DONE = frozenset(("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED",
                         "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"))
_MISSING = frozenset(("NoSuchKey", "NoSuchBucket", "NOT_FOUND"))
IN_FLIGHT = 4  # observations at once per process (each holds up to the reader's max_bytes)
DRAIN_S = 5.0  # a clean shutdown's wait for the observations in flight
CHECKPOINT = 256  # records observed between two yields to the event loop
PUBLISHERS = 64  # records' messages awaiting JetStream's acknowledgement at once, per job
# a record's observation: (request, action, input tokens, output tokens, prompt, completion)
Observation = tuple[GateRequest, str, int, int, str, str]


def record_custom_id(record_id: str) -> str:
    """The batch gate's ``custom_id`` of a job's record (a record id may not fit its pattern):
    the same at the creation and in the output, on every worker."""
    return "j" + hashlib.blake2b(record_id.encode(), digest_size=16).hexdigest()


def job_key(api: ProviderApi, answer: Any) -> str | None:
    """The job's name in a creation's or a get's answer: Bedrock's ARN, Vertex's resource name."""
    if not isinstance(answer, dict):
        return None
    key = answer.get("name" if api is VERTEX_API else "jobArn")
    return key if isinstance(key, str) and 0 < len(key) <= 2048 else None


class JobOutputs:
    """Observes the outputs of ended jobs (see the module's docstring)."""

    def __init__(self, batches: BatchGate, s3: Callable[[], S3Reader],
                 gcs: Callable[[], GcsReader], *, capacity: int = 10_000,
                 in_flight: int = IN_FLIGHT) -> None:
        self.batches = batches
        self._s3, self._gcs = s3, gcs  # the job gate's readers (tests replace them)
        self.capacity = capacity
        self.in_flight = in_flight
        self.observed: OrderedDict[str, None] = OrderedDict()  # job keys observed here
        self.observing: set[str] = set()  # job keys being observed now
        self.counts: Counter[str] = Counter()  # jobs, completions, unknown
        self.unobserved: Counter[str] = Counter()  # by reason
        self.charged = 0  # the tokens charged to the accounts' token rates
        self.stored = 0  # the records' messages JetStream acknowledged
        self._group: TaskGroup | None = None
        self._idle: anyio.Event | None = None  # set when the last observation ends (a drain)

    def _note(self, reason: str, n: int = 1) -> None:
        self.unobserved[reason] += n
        self.batches.metrics.job_outputs_unobserved.labels(reason).inc(n)

    @contextlib.asynccontextmanager
    async def running(self, drain_s: float = DRAIN_S) -> AsyncIterator[JobOutputs]:
        """Runs the observations the polls start, until the block exits; then starts no more,
        gives those in flight ``drain_s`` to finish and publish, and cancels the rest (their
        job unnoted: the next poll observes it)."""
        async with anyio.create_task_group() as tg:
            self._group = tg
            try:
                yield self
            finally:
                self._group = None
            with anyio.move_on_after(drain_s):
                if self.observing:
                    self._idle = anyio.Event()
                    await self._idle.wait()
                await self.batches.admission.telemetry.settle(drain_s)
            if self.observing:
                log.warning("%d batch job outputs were being observed at the shutdown: left "
                            "for their next poll", len(self.observing))
            tg.cancel_scope.cancel()

    def poll(self, caller: Caller, api: ProviderApi, answer: bytes,
             authorization: list[str]) -> bool:
        """A job's status as the upstream answered the caller's poll: an ended job's output
        observation started in the background (True), once at a time. Never blocks, never
        raises for the output: what is not observed is counted."""
        try:
            doc = json.loads(answer)
        except (ValueError, UnicodeDecodeError):
            return False  # not a job: the poll is answered as the upstream answered it
        key = job_key(api, doc)
        state = doc.get("state" if api is VERTEX_API else "status") if key else None
        if key is None or state not in (VERTEX_DONE if api is VERTEX_API else BEDROCK_DONE):
            return False
        if key in self.observed or key in self.observing:
            return False
        if self._group is None:
            self._note("not_running")
            log.warning("a batch job's output was not observed: the proxy is not running")
            return False
        if len(self.observing) >= self.in_flight:
            self._note("busy")
            log.info("a batch job's output was not observed now: %d observations in flight; "
                     "its next poll starts it", len(self.observing))
            return False
        self.observing.add(key)
        self._group.start_soon(self._background, caller, api, key, doc, list(authorization))
        return True

    async def _background(self, caller: Caller, api: ProviderApi, key: str,
                          doc: dict[str, Any], authorization: list[str]) -> None:
        try:
            await self._observe_job(caller, api, key, doc, authorization)
        except Exception as exc:  # a bug or a failure below: counted, the next poll retries
            self._note("error")
            log.error("a batch job's output observation failed (%s): left for the next poll\n"
                      "%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
        finally:
            self.observing.discard(key)
            if not self.observing and self._idle is not None:
                self._idle.set()

    async def _observe_job(self, caller: Caller, api: ProviderApi, key: str,
                           doc: dict[str, Any], authorization: list[str]) -> None:
        records = self.batches.records  # the region's batch ledger: observed on another gate
        if records is not None and await records.observed(key):
            self._remember(key)
            return
        try:
            objects = await self._read(caller, api, doc, authorization)
        except AccessRefused as exc:
            self._note("access_refused")
            log.info("a batch job's output was not observed: its authority may not read it "
                     "(%s)", exc.reason)
            return
        except ObjectStoreError as exc:  # a later poll tries again
            reason = _reason(exc)
            self._note(reason)
            log.warning("a batch job's output was not observed: %s (%s)", reason,
                        getattr(exc, "reason", type(exc).__name__))
            return
        tokens = await self._observe(caller, api, key, objects)
        if tokens is None:
            return  # some records not stored: the next poll observes the job again
        noted = "failed" if records is None else await records.mark_observed(key)
        if noted != "already":  # the job's tokens charged once: by the gate that noted it
            self._charge(caller, tokens)
        self._remember(key)

    def _charge(self, caller: Caller, tokens: int) -> None:
        """The job's records' tokens charged to the account's token rate, at once (a GCRA
        charged a sum is charged its parts)."""
        if tokens > 0:
            self.charged += tokens
            self.batches.gate.observe(GateRequest(caller.account, "", rated=False),
                                      GateResponse("", tokens, 0), gate_now())

    async def _read(self, caller: Caller, api: ProviderApi, doc: dict[str, Any],
                    authorization: list[str]) -> list[tuple[str, bytes]]:
        if api is VERTEX_API:
            info = doc.get("outputInfo")
            folder = info.get("gcsOutputDirectory") if isinstance(info, dict) else None
            objects = await self._gcs().read_folder(folder, authorization)
            return [(name, data) for name, data in objects if name.endswith(".jsonl")]
        config = doc.get("outputDataConfig")
        s3 = config.get("s3OutputDataConfig") if isinstance(config, dict) else None
        uri = s3.get("s3Uri") if isinstance(s3, dict) else None
        role = doc.get("roleArn")
        owner = s3.get("s3BucketOwner") if isinstance(s3, dict) else None
        job_id = str(doc["jobArn"]).rsplit("/", 1)[-1]
        folder = f"{uri.rstrip('/')}/{job_id}/" if isinstance(uri, str) else None
        objects = await self._s3().read(folder, role if isinstance(role, str) else "",
                                        caller.account, owner if isinstance(owner, str) else None)
        return [(name, data) for name, data in objects
                if name.endswith(".out") and not name.endswith("manifest.json.out")]

    async def _observe(self, caller: Caller, api: ProviderApi, key: str,
                       objects: list[tuple[str, bytes]]) -> int | None:
        """Each record's completion observed: its messages stored on the region's streams, each
        acknowledged by JetStream (its tokens not charged yet); the records' tokens, or None
        where some were not stored (counted ``unstored``: the next poll observes the job)."""
        # (an entry forgotten here was observed as not served: its completions are still
        # scored; its requests' second signals are dropped by the actor, their ids the same)
        entry = await self.batches.entry_of(key, caller.account)
        id_key, output_key = ("custom_id", "response") if api is VERTEX_API else (
            "recordId", "modelOutput")
        standing = self.batches.gate.peek(caller.account, gate_now(), caller.aggregates)
        malformed = duplicates = lines = tokens = sent = 0
        seen: set[str] = set()
        unstored: list[str] = []  # why a record's messages were not stored (the first stops)
        send, receive = anyio.create_memory_object_stream[Observation](PUBLISHERS)
        async with anyio.create_task_group() as tg:
            for _ in range(PUBLISHERS):
                tg.start_soon(self._publisher, receive.clone(), unstored)
            receive.close()
            async with send:
                for line in (line for _, data in objects for line in data.split(b"\n")):
                    if unstored:
                        break  # the job is left for its next poll: no use sending the rest
                    if not line.strip():
                        continue
                    lines += 1
                    if lines % CHECKPOINT == 0:
                        await anyio.lowlevel.checkpoint()  # the live requests run
                    try:
                        record = json.loads(line)
                    except (ValueError, UnicodeDecodeError):
                        record = None
                    record_id = record.get(id_key) if isinstance(record, dict) else None
                    if not isinstance(record_id, str) or not record_id:
                        malformed += 1
                        continue
                    message = record.get(output_key)
                    completion, tokens_in, tokens_out = completion_of(message)
                    custom_id = record_custom_id(record_id)
                    if custom_id in seen:
                        duplicates += 1  # observed once: its request's signal is taken once
                        continue
                    seen.add(custom_id)
                    item = None if entry is None else entry.admitted.get(custom_id)
                    if item is None:
                        self.counts["unknown"] += 1
                        await send.send((self._unknown(caller, key, custom_id, message),
                                         standing.action, tokens_in, tokens_out, "",
                                         completion))
                    else:
                        await send.send((item.request, item.decision.action, tokens_in,
                                         tokens_out, item.prompt, completion))
                    sent += 1
                    tokens += tokens_in + tokens_out
                    self.counts["completions"] += 1
        if malformed:
            self._note("malformed", malformed)
            log.warning("a batch job's output held %d lines that are not records: not observed",
                        malformed)
        if duplicates:
            self._note("duplicate", duplicates)
        if unstored:
            self._note("unstored", len(unstored))
            log.warning("a batch job's output: %d of %d records' observations were not stored "
                        "(%s): the job's next poll observes it again", len(unstored), sent,
                        unstored[0])
            return None
        if entry is not None:
            self.batches.observed(entry)
        self.counts["jobs"] += 1
        return tokens

    async def _publisher(self, observations: MemoryObjectReceiveStream[Observation],
                         unstored: list[str]) -> None:
        """Stores each observation's messages (the RequestObserved signal, the prompt still held,
        the completion) and awaits JetStream's acknowledgement of each; once one was not
        stored, the rest are only counted."""
        telemetry = self.batches.admission.telemetry
        async with observations:
            async for observation in observations:
                if unstored:
                    unstored.append("skipped")
                    continue
                link = telemetry.link
                for subject, payload, headers in telemetry.observed_messages(*observation):
                    failure = await stored(link.nc if link is not None else None, subject,
                                           payload, telemetry.publish_timeout_s,
                                           headers=headers)
                    if failure is not None:
                        unstored.append(failure)
                        break
                    self.stored += 1

    def _remember(self, key: str) -> None:
        self.observed[key] = None
        while len(self.observed) > self.capacity:
            self.observed.popitem(last=False)

    @staticmethod
    def _unknown(caller: Caller, key: str, custom_id: str, message: Any) -> GateRequest:
        model = message.get("model") if isinstance(message, dict) else None
        return GateRequest(caller.account, result_request_id(key, custom_id),
                           model=model if isinstance(model, str) else "",
                           surface=BATCH_CALL.surface("proxy"), rated=False,
                           organization_id=caller.organization_id,
                           project_id=caller.project_id,
                           api_key_fingerprint=caller.api_key_fingerprint)


def _reason(exc: ObjectStoreError) -> str:
    if isinstance(exc, ObjectUnreadable):
        return "missing" if exc.reason in _MISSING else "unreadable"
    return "too_large" if isinstance(exc, InputTooLarge) else "bad_location"
