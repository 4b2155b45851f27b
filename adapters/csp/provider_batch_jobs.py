"""Providers' batch jobs that take a file: each record checked and observed like a single request.

Amazon Bedrock's batch inference (``CreateModelInvocationJob``, ``POST /model-invocation-job``)
names its input by an S3 URI: a JSON Lines file (or a folder of them), each line
``{"recordId": ..., "modelInput": <a Bedrock Messages body with anthropic_version>}``. The
model never sees the file through the gate, so the gate reads it when the job is created
(``object_store``, bounded) and checks every record as the Message Batches gate checks a batch's
requests (``batches.BatchGate.submit``: the account's decision, rate limits, screening or
classification as the account's level asks; the signal's surface is ``proxy/batch``). Each
record is observed like a single request that was not served a completion (the job's output
goes to the customer's bucket, not through the gate).

The job creation goes upstream unchanged only when every record passes. A record that is
refused, or one the gate would serve only with the safety prompt (the file cannot be changed on
its way), refuses the whole job in Bedrock's error shape: the refused records' count and the
first refusal's reason, never a prompt's text. Bad input is a typed error in Bedrock's shape: a
malformed body or JSON Lines (``ValidationException``), an input over the limits (413), and an
object the store does not hand over: for a screened account (any intervention on its standing,
a fresh account's screening included) or while the gate is not synced the job is refused (503,
fail closed); otherwise it is forwarded unchecked, counted in ``counts["unreadable_forwarded"]``
and logged (the model's own read then fails alike).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from safeguards.adapters.csp.answers import (
    Receive,
    Scope,
    Send,
    action_header,
    respond,
    send_api_error,
)
from safeguards.adapters.csp.batches import BatchGate, BatchProxy
from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.decision import BLOCK, Decision, refusal
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.messages_api import BadRequest, json_object
from safeguards.adapters.csp.object_store import (
    ObjectStoreError,
    ObjectUnreadable,
    S3Reader,
)
from safeguards.adapters.csp.provider_api import ProviderCall
from safeguards.adapters.csp.routes import Route, Target

log = logging.getLogger(__name__)

MAX_RECORDS = 50_000  # Bedrock's own ceiling for a job's records
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,2047}")  # ids, profiles, ARNs
_RECORD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_INTERVENED = "records the gate serves only with the safety prompt cannot be changed in a file"


@dataclass(frozen=True, slots=True)
class BedrockJob:
    model_id: str
    s3_uri: str
    bucket_owner: str | None


@dataclass(frozen=True, slots=True)
class JobRefusal:
    """What refuses a job: the status, the message (no prompt text), the extra headers."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    action: str = "block"


def bedrock_job(body: bytes) -> BedrockJob:
    """A ``CreateModelInvocationJob`` body's model and input, validated."""
    doc = json_object(body)
    for name in ("jobName", "roleArn"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise BadRequest(400, f"{name}: field required (a non-empty string)")
    model = doc.get("modelId")
    if not isinstance(model, str) or not _MODEL_ID.fullmatch(model):
        raise BadRequest(400, "modelId: expected a model id, inference profile or ARN")
    source = doc.get("inputDataConfig")
    s3 = source.get("s3InputDataConfig") if isinstance(source, dict) else None
    if not isinstance(s3, dict) or not isinstance(s3.get("s3Uri"), str):
        raise BadRequest(400, "inputDataConfig.s3InputDataConfig.s3Uri: field required")
    if s3.get("s3InputFormat", "JSONL") != "JSONL":
        raise BadRequest(400, "inputDataConfig.s3InputDataConfig.s3InputFormat: only JSONL")
    owner = s3.get("s3BucketOwner")
    if owner is not None and not (isinstance(owner, str) and owner.isdigit() and len(owner) == 12):
        raise BadRequest(400, "inputDataConfig.s3InputDataConfig.s3BucketOwner: an account id")
    if not isinstance(doc.get("outputDataConfig"), dict):
        raise BadRequest(400, "outputDataConfig: field required (an object)")
    return BedrockJob(model, s3["s3Uri"], owner)


def bedrock_records(objects: list[tuple[str, bytes]], model: str,
                    max_records: int = MAX_RECORDS) -> list[tuple[str, dict[str, Any]]]:
    """(recordId, Messages params) of each line of the job's input objects, each validated as a
    Bedrock body and turned into the Messages body the gate checks (the job's model named).
    Errors name the object's place in the input and the line's number, never their text."""
    out: list[tuple[str, dict[str, Any]]] = []
    call = ProviderCall(BEDROCK_API, model, False)
    for number, (_, data) in enumerate(objects, 1):
        for line_no, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            where = f"input object {number}, line {line_no}"
            if len(out) >= max_records:
                raise BadRequest(413, f"the job's input holds more than {max_records} records")
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest(400, f"{where}: not valid JSON") from None
            model_input = record.get("modelInput") if isinstance(record, dict) else None
            if not isinstance(model_input, dict):
                raise BadRequest(400, f"{where}: expected an object with modelInput")
            record_id = record.get("recordId", f"line-{number}-{line_no}")
            if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
                raise BadRequest(400, f"{where}: recordId: 1 to 128 letters, digits, _.:-")
            try:
                BEDROCK_API.parse(json.dumps(model_input).encode(), call)
            except BadRequest as exc:
                raise BadRequest(400, f"{where}: modelInput: {exc}") from None
            params = {k: v for k, v in model_input.items() if k != "anthropic_version"}
            params["model"] = model
            out.append((record_id, params))
    if not out:
        raise BadRequest(400, "the job's input holds no records")
    return out


class JobGate:
    """Checks a provider's batch job at its creation (the records of its input file)."""

    def __init__(self, batches: BatchGate, reader: S3Reader | None = None, *,
                 max_records: int = MAX_RECORDS) -> None:
        self.batches = batches
        self.reader = reader or S3Reader()
        self.max_records = max_records
        self.counts: Counter[str] = Counter()  # forwarded, refused, bad_input, unreadable_*

    async def check_bedrock(self, caller: Caller, body: bytes) -> JobRefusal | None:
        """None: every record passed, the job goes upstream unchanged; else its refusal.
        Raises ``BadRequest`` for a malformed job or input (answered in Bedrock's shape)."""
        try:
            return await self._check(caller, body)
        except BadRequest:
            self.counts["bad_input"] += 1
            raise

    async def _check(self, caller: Caller, body: bytes) -> JobRefusal | None:
        job = bedrock_job(body)
        gate = self.batches.gate
        standing = gate.peek(caller.account, gate_now(), caller.aggregates)
        if standing.flags & BLOCK:
            gate.count(standing)
            self.counts["refused"] += 1
            return _refused(standing, "this account may not create batch jobs")
        try:
            objects = await self.reader.read(job.s3_uri, job.bucket_owner)
        except ObjectUnreadable as exc:
            if standing.flags or standing.refused or not gate.synced:
                self.counts["unreadable_refused"] += 1
                log.warning("a batch job refused: its input was unreadable (%s)", exc.reason)
                return JobRefusal(503, f"{exc}; the safety gate checks every record before a "
                                       "job starts", (("retry-after", "5"),))
            self.counts["unreadable_forwarded"] += 1
            log.warning("a batch job forwarded unchecked: its input was unreadable (%s)",
                        exc.reason)
            return None
        except ObjectStoreError as exc:
            raise BadRequest(exc.status, str(exc)) from None
        records = bedrock_records(objects, job.model_id, self.max_records)
        return await self._records(caller, records)

    async def _records(self, caller: Caller,
                       records: list[tuple[str, dict[str, Any]]]) -> JobRefusal | None:
        # the batch gate's custom_ids are its own (r0, r1...): a recordId may not fit them
        batch = {"requests": [{"custom_id": f"r{i}", "params": params}
                              for i, (_, params) in enumerate(records)]}
        submission = await self.batches.submit(caller, json.dumps(batch).encode())
        entry = submission.entry
        changed = 0
        for item in entry.admitted.values():  # refused records were observed by submit
            changed += item.decision.safety_prompt
            self.batches.admission.observe(item.request, item.decision.action, 0, 0,
                                           item.prompt, "")
            item.prompt = ""
        refused = len(entry.refused) + changed
        if not refused:
            self.counts["forwarded"] += 1
            log.info("a batch job forwarded: %d records checked", len(records))
            return None
        self.counts["refused"] += 1
        log.info("a batch job refused: %d of %d records refused", refused, len(records))
        first = submission.first_refusal
        what = f"{refused} of {len(records)} records refused by the safety gate"
        if first is None:
            return JobRefusal(403, f"{what}: {_INTERVENED}", (), "intervene")
        return _refused(first, what)


def _refused(decision: Decision, what: str) -> JobRefusal:
    message, extra = refusal(decision)
    return JobRefusal(decision.status, f"{what}: {message}", extra, decision.action)


class JobProxy(BatchProxy, Protocol):
    """What the job routes use of the HTTP proxy (``proxy.CspProxy``)."""

    jobs: JobGate


async def serve_job(proxy: JobProxy, scope: Scope, receive: Receive, send: Send,
                    target: Target) -> None:
    """Bedrock's batch job routes on the HTTP proxy: a creation checked record by record, the
    others (list, get, stop) with the caller's identity checked and a blocked account refused."""
    caller, body, forward = await proxy._caller_and_body(scope, receive)
    if body is None:
        return  # the client went away
    api = target.call.api
    if target.route is Route.JOB_CREATE:
        refused = await proxy.jobs.check_bedrock(caller, body)
        if refused is not None:
            await send_api_error(send, api, refused.status, refused.message, (
                *((k.encode(), v.encode()) for k, v in refused.headers),
                action_header(refused.action)))
            return
    else:
        standing = proxy.gate.peek(caller.account, gate_now(), caller.aggregates)
        if standing.flags & BLOCK:
            proxy.gate.count(standing)
            await proxy._refuse(send, standing, api)
            return
    forward.append((b"accept-encoding", b"identity"))
    response = await proxy._upstream(send, proxy.upstream_client.request(
        scope["method"].encode(), (target.forward or target.path).encode("latin-1"), body,
        forward), api)
    if response is None:
        return
    try:
        answer = await proxy._upstream_answer(send, response, api)
        if answer is None:
            return
        kept = [(k, v) for k, v in response.headers.items() if k in api.upstream_error_headers]
        content_type = response.headers.get(b"content-type", b"application/json")
        await respond(send, response.status, answer, (b"content-type", content_type), *kept)
    finally:
        await response.aclose()
