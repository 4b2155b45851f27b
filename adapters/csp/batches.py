"""Message Batches through the gate: each request of a batch is checked like a single request, and
each result observed like one.

Creation (``POST /v1/messages/batches``): every request's ``params`` is admitted as a single
request would be (``Admission.admit``: enforcement, screening or classification; the signal's
surface is ``proxy/batch``), except that the creation is one call against the account's request
rate (its first request's check: over the rate, the whole creation is throttled; the requests run
upstream on the batch's own quota, and their tokens are charged as their results are observed). A
refused request is withheld from the batch the upstream sees and its result is the error a single
request got (an ``errored`` result, spliced into the results); an intervened one carries the safety
system prompt; if every request is refused, the creation is refused as its first request was. A
creation the upstream does not take (an error, a failure) has its admitted requests observed as
requests not served, as a single request's failure is (``unserved``). The routes:
``batch_routes`` (the HTTP proxy), ``extproc_batches`` (behind Envoy).

Results (``GET /v1/messages/batches/{id}/results``): each result goes through the single request's
completion path (``answers.CompletionGuard``): where the account's level ends streams, on the
decision its request was admitted with or on its standing now (a batch runs for hours: an account
escalated since is checked as it stands), or with ``classify_all_streams``, its completion is
scored and one that crosses is replaced by a refusal (``stop_reason: "refusal"``, no content, the
action ``terminate_stream``), on every read. Each request is observed once, the first time its
batch's results pass (tokens charged, its RequestObserved signal, its prompt and completion queued
for scoring), under its result id ``{batch_id}/{custom_id}`` (``result_request_id``): the same on
every worker and after a restart, so the account's actor and the classifier take it once (their ids
derive from it) whichever gate observes it. A blocked account may not read results. A line that is
not a result (malformed, no custom_id) is dropped and counted, as is a result for a request the
gate withheld (its errored result is the gate's).

Before a creation is answered, its admitted prompts are stored on the region's content stream
under their result ids (``batch_prompts``, JetStream-acknowledged; on NATS), so a process killed
after answering has lost no prompt's scoring, and the results' observation sends no prompt text
again. The gate keeps each batch's admitted requests in memory until its results are read
(``capacity`` batches and ``max_held_chars`` of prompt text not stored yet, the oldest forgotten
first, counted in ``forgotten``; a forgotten batch's requests are observed then, as requests not
yet served, prompts still held queued for scoring), and, with ``records``, in the region's batch
ledger (``batch_ledger``: each admitted request's decision and prompt metadata, each refused
request's errored result, sealed, no text, kept as long as the provider keeps the results).
Results of a batch it does not hold (another worker's or proxy host's, one from before a
restart, a forgotten one) are checked and observed from that record as on the admitting gate,
the refused requests' results spliced in (a prompt the content stream did not store at the
creation is queued by the admitting process only: ``batch_ledger``). Without a record (none
written, another account's, unreadable), they are checked by the caller's standing now and
observed on this process's first read of them with the caller, the model and the tokens only,
counted in ``unknown_results``. Batch objects (create, retrieve, list) are answered with
``results_url`` pointing at this proxy, so that clients fetch results through the gate.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters import tracing
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.answers import Checked, CompletionGuard
from safeguards.adapters.csp.batch_ledger import (
    BatchEntry,
    BatchItem,
    BatchRecords,
    result_request_id,
)
from safeguards.adapters.csp.batch_prompts import BatchPrompts
from safeguards.adapters.csp.decision import (
    TERMINATE_ACTION,
    THROTTLE_ACTION,
    Decision,
    GateRequest,
    refusal,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.messages_api import (
    completion_of,
    error_body,
    refusal_message,
    with_safety_prompt,
)
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.provider_api import MessagesApi, ProviderCall
from safeguards.adapters.csp.upstream_batches import batch_requests


class BatchItemApi(MessagesApi):
    """A request inside a batch: a Messages body (the signal's surface says ``batch``)."""

    name = "batch"


BATCH_CALL = ProviderCall(BatchItemApi())


@dataclass(slots=True)
class Submission:
    body: bytes | None  # the batch the upstream sees (None: every request was refused)
    entry: BatchEntry
    first_refusal: Decision | None


class BatchGate:
    def __init__(self, admission: Admission, gate: Gate, metrics: CspMetrics, *,
                 classify_all_streams: bool = False, capacity: int = 1000,
                 max_held_chars: int = 64 * 1024 * 1024,
                 records: BatchRecords | None = None) -> None:
        self.admission = admission
        self.gate = gate
        self.metrics = metrics
        self.capacity = capacity
        self.max_held_chars = max_held_chars
        self._ledger: OrderedDict[str, BatchEntry] = OrderedDict()
        self.held_chars = 0
        self.forgotten = 0
        self.unknown_results = 0  # results of batches (or requests) it did not hold
        # such batches it has observed, by (account, batch id)
        self._unknown_read: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.records = records  # the region's batch ledger (None: this process's memory only)
        # batches read from it (no text: bounded apart from the batches this gate admitted)
        self._read_records: OrderedDict[str, BatchEntry] = OrderedDict()
        self.guard = CompletionGuard(admission, gate, metrics,
                                     classify_all_streams=classify_all_streams)
        # admitted prompts stored on the content stream before a creation is answered (NATS)
        self.prompts = None if admission.telemetry.link is None else BatchPrompts(
            admission.telemetry,
            lambda reason, n: metrics.batch_prompts_unpublished.labels(reason).inc(n))

    async def submit(self, caller: Caller, body: bytes) -> Submission:
        admitted: dict[str, BatchItem] = {}
        refused: dict[str, dict[str, Any]] = {}
        forward: list[dict[str, Any]] = []
        first_refusal: Decision | None = None
        for n, (custom_id, params) in enumerate(batch_requests(body)):
            with tracing.batch_item(tracing.BATCH_REQUEST_SPAN):
                # The creation is one call against the account's request rate (its first
                # request's check); over the rate, the whole batch is refused as that call.
                item = await self.admission.admit(caller, json.dumps(params).encode(), "proxy",
                                                  BATCH_CALL, rated=n == 0)
                decision = item.decision
                if decision.refused:
                    message, _ = refusal(decision)
                    refused[custom_id] = {"type": "errored", "error": json.loads(
                        error_body(decision.status, message))}
                    self.admission.observe(item.request, decision.action, 0, 0, item.prompt, "")
                    first_refusal = first_refusal or decision
                    if n == 0 and decision.action == THROTTLE_ACTION:  # the creation itself
                        return Submission(None, BatchEntry({}, refused, account=caller.account),
                                          decision)
                    continue
                context = tracing.current_context()
            if decision.safety_prompt:
                params = with_safety_prompt(params)
            admitted[custom_id] = BatchItem(item.request, decision, item.prompt, context)
            forward.append({"custom_id": custom_id, "params": params})
        body_out = json.dumps({"requests": forward}).encode() if forward else None
        return Submission(body_out, BatchEntry(admitted, refused, account=caller.account),
                          first_refusal)

    async def remember(self, batch_id: str, entry: BatchEntry) -> None:
        """The upstream took the batch as ``batch_id``: its requests are named for their results
        (``result_request_id``), their prompts stored on the region's content stream
        (``batch_prompts``: one not stored is held here until the results are read), the batch
        recorded in the region's batch ledger (``batch_ledger``; a record not written is
        counted there) and held until its results are read. The creation is answered after."""
        for custom_id, item in entry.admitted.items():
            item.request.request_id = result_request_id(batch_id, custom_id)
        entry.batch_id = batch_id
        async with anyio.create_task_group() as tg:
            if self.records is not None:
                tg.start_soon(self.records.put, entry)
            if self.prompts is not None:
                tg.start_soon(self.prompts.publish, entry)
        self._ledger[batch_id] = entry
        self.held_chars += entry.held_chars
        while len(self._ledger) > self.capacity or (
                self.held_chars > self.max_held_chars and len(self._ledger) > 1):
            _, oldest = self._ledger.popitem(last=False)
            self.forgotten += 1
            self.held_chars -= oldest.held_chars
            self.unserved(oldest)

    def unserved(self, entry: BatchEntry) -> None:
        """Observes ``entry``'s admitted requests as requests not served (no tokens, no
        completion), where not observed yet: its creation failed upstream, or it is forgotten
        before its results were read."""
        if entry.observed:
            return
        entry.observed = True
        for item in entry.admitted.values():
            self.admission.observe(item.request, item.decision.action, 0, 0, item.prompt, "")
            item.prompt = ""

    async def shut_down(self, deadline_s: float) -> int:
        """Shutting down: the prompt text still held (not stored at the creation) of each batch
        whose results it has not read is queued for scoring now (content only: the request's
        signal comes with its results, on whichever gate reads them, from the region's record)
        and published (up to
        ``deadline_s``); how many prompts."""
        released = 0
        for entry in self._ledger.values():
            if entry.observed:
                continue
            for item in entry.admitted.values():
                if item.prompt:
                    self.admission.telemetry.emit_content(item.request, "prompt", item.prompt)
                    item.prompt = ""
                    released += 1
        self.held_chars = 0
        if released:
            await self.admission.telemetry.settle(deadline_s)
        return released

    def known(self, batch_id: str) -> bool:
        return batch_id in self._ledger

    async def entry_of(self, batch_id: str, account: str) -> BatchEntry | None:
        """The batch's (or a provider's job's: ``job_outputs``) admitted requests, held here or
        read from the region's batch ledger (then kept); None where neither has it or it is
        another account's."""
        entry = self._ledger.get(batch_id) or self._read_records.get(batch_id)
        if entry is None and self.records is not None:
            entry = await self.records.get(batch_id)
            if entry is not None:
                self._read_records[batch_id] = entry
                while len(self._read_records) > self.capacity:
                    self._read_records.popitem(last=False)
        return entry if entry is not None and entry.account == account else None

    def observed(self, entry: BatchEntry) -> None:
        """``entry``'s requests observed with their results: no text kept for them."""
        self.held_chars -= entry.held_chars
        entry.observed = True
        for admitted in entry.admitted.values():
            admitted.prompt = ""

    async def results(self, batch_id: str, caller: Caller, body: bytes) -> bytes:
        """The results as the client gets them: checked, observed once, refusals spliced in."""
        read = (caller.account, batch_id)
        entry = self._ledger.get(batch_id) or self._read_records.get(batch_id)
        if entry is None and self.records is not None:
            entry = await self.records.get(batch_id)
            if entry is not None:  # read once from the region's ledger, then kept here
                entry.observed = read in self._unknown_read
                self._read_records[batch_id] = entry
                while len(self._read_records) > self.capacity:
                    self._read_records.popitem(last=False)
        if entry is not None and entry.account != caller.account:
            entry = None  # another account's batch id: not this caller's requests nor context
        standing = self.gate.peek(caller.account, gate_now(), caller.aggregates)
        first_unknown = entry is None and read not in self._unknown_read
        first_read = entry is not None and not entry.observed
        out: list[bytes] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                self.metrics.upstream_errors.labels("bad_json").inc()
                continue  # a malformed line is not a result: never passed on unchecked
            if not isinstance(doc, dict) or not isinstance(doc.get("result"), dict) or not (
                    isinstance(doc.get("custom_id"), str)):
                self.metrics.upstream_errors.labels("bad_json").inc()
                continue
            custom_id = doc["custom_id"]
            item = None if entry is None else entry.admitted.get(custom_id)
            if entry is not None and custom_id in entry.refused:
                self.metrics.upstream_errors.labels("unexpected_result").inc()
                continue  # the upstream never had it: its errored result is spliced below
            if entry is None or item is None:
                await self._unknown(batch_id, custom_id, doc["result"], caller, standing,
                                    observe=first_unknown if entry is None else first_read)
            else:
                await self._known(entry, custom_id, item, doc["result"], standing)
            out.append(json.dumps(doc).encode())
        if entry is not None:
            out += (json.dumps({"custom_id": custom_id, "result": result}).encode()
                    for custom_id, result in entry.refused.items())
            self.held_chars -= entry.held_chars
            entry.observed = True
            for admitted in entry.admitted.values():
                admitted.prompt = ""  # observed: the text is on the content stream, not kept here
        elif first_unknown:
            self._unknown_read[read] = None
            while len(self._unknown_read) > self.capacity:
                self._unknown_read.popitem(last=False)
        return b"".join(line + b"\n" for line in out)

    async def _known(self, entry: BatchEntry, custom_id: str, item: BatchItem,
                     result: dict[str, Any], standing: Decision) -> None:
        """A result of a request this gate admitted: its completion checked under the decision
        it was admitted with and the account's standing now (on a later read again unless the
        classifier scored it before: a fail-closed refusal is not kept), and observed once, on
        the batch's first read."""
        message = result.get("message") if result.get("type") == "succeeded" else None
        first = not entry.observed
        with (tracing.batch_item(tracing.BATCH_RESULT_SPAN, item.trace) if first
              else nullcontext()):
            if custom_id in entry.withheld or custom_id in entry.scored:
                checked = Checked(message, *completion_of(message),
                                  withheld=custom_id in entry.withheld)
            else:
                checked = await self.guard.whole(item.request, message, item.decision, standing)
                if checked.scored:  # a fallback's answer holds for this read only
                    entry.scored.add(custom_id)
                    if checked.withheld:
                        entry.withheld.add(custom_id)
            if checked.withheld and isinstance(message, dict):
                result["message"] = refusal_message(message)
            if first:
                action = TERMINATE_ACTION if checked.withheld else item.decision.action
                self.admission.observe(item.request, action, checked.tokens_in,
                                       checked.tokens_out, item.prompt, checked.completion)

    async def _unknown(self, batch_id: str, custom_id: str, result: dict[str, Any],
                       caller: Caller, standing: Decision, *, observe: bool) -> None:
        """A result of a batch this process does not hold (another worker's, one before a
        restart, a forgotten one) or of a request its batch did not have: checked by the
        account's standing now and, on this process's first read of it, observed under its
        result id (the nodes and the classifier take it once whichever gate sends it)."""
        self.unknown_results += 1
        message = result.get("message") if result.get("type") == "succeeded" else None
        model = message.get("model") if isinstance(message, dict) else None
        request = GateRequest(caller.account, result_request_id(batch_id, custom_id),
                              model=model if isinstance(model, str) else "",
                              surface=BATCH_CALL.surface("proxy"), rated=False,
                              organization_id=caller.organization_id,
                              project_id=caller.project_id,
                              api_key_fingerprint=caller.api_key_fingerprint)
        checked = await self.guard.whole(request, message, standing)
        if checked.withheld:
            result["message"] = checked.doc
        if observe:
            self.admission.observe(request, TERMINATE_ACTION if checked.withheld else
                                   standing.action, checked.tokens_in, checked.tokens_out, "",
                                   checked.completion)
