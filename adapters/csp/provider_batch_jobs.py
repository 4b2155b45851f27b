"""Providers' batch jobs that take a file: each record checked and observed like a single request.

Amazon Bedrock's batch inference (``CreateModelInvocationJob``, ``POST /model-invocation-job``)
names its input by an S3 URI: a JSON Lines file (or a folder of them), each line
``{"recordId": ..., "modelInput": <a Bedrock Messages body with anthropic_version>}``. Google
Vertex AI's batch prediction (``POST /v1/projects/{p}/locations/{l}/batchPredictionJobs``, a
Claude model) names Cloud Storage objects (``inputConfig.gcsSource.uris``), each line
``{"custom_id": ..., "request": <a Vertex Messages body>}``. The model never sees the files
through the gate, so the gate reads them when the job is created (``object_store``,
``gcs_store``: bounded) and checks every record as the Message Batches gate checks a batch's
requests (``batches.BatchGate.submit``: the account's decision, rate limits, screening or
classification as the account's level asks; the signal's surface is ``proxy/batch``). Each
record is observed like a single request, its answer once the job has ended (``job_outputs``).

What the gate sees late: a job's output. The provider runs the job and writes every record's
answer to the job's output location with its own service credentials; no answer passes through
the gate, so unlike a Message Batch's results (``batches``) none can be scored, withheld or
replaced by a refusal before it is delivered. The gate therefore fails closed where the single
path would check the answer: a record whose decision ends streams (``terminate_stream``) refuses
the job, as one it would serve only with the safety prompt does. The answers are observed after
the fact (``job_outputs``): a job created through the HTTP proxy is remembered under its name as
a Message Batch is (its prompts on the content stream, its record in the region's batch ledger),
and when a caller's poll of it through the gate finds it ended, its output is read with the
job's authority and each record's completion observed as a batch result is (in the background:
the poll is answered at once). Behind Envoy, ext_proc does the same from the creation's and the
poll's answers (``extproc_jobs``).

The job creation goes upstream unchanged only when every record passes. A record that is
refused, one the gate would serve only with the safety prompt (the file cannot be changed on its
way), or one whose answer it would check, refuses the whole job in the provider's error shape:
the refused records' count and the first refusal's reason, never a prompt's text. Bad input is a
typed error in that shape: a malformed body or JSON Lines (400), an input over the limits (413),
and an object the store does not hand over: for a screened account (any intervention on its
standing, a fresh account's screening included) or while the gate is not synced the job is
refused (503, fail closed); otherwise it is forwarded unchecked, counted in
``counts["unreadable_forwarded"]`` and logged (the model's own read then fails alike). The input
is read once, at creation: an object replaced between the check and the job's run is not seen
(the providers take no object version to pin).

Whose authority reads the input: the job's, never the gate's. A Bedrock job's input is read as
its role (``roleArn``, assumed through STS: ``assumed_roles``), a Vertex job's with the
caller's own OAuth token (its ``Authorization`` header). The gate reading with its own
credentials would be a confused deputy: a caller could name an object it may not read, and the
gate's answer (its existence, its records' count, their refusals) would tell of it. A role the
gate may not assume, a token that is missing, or an object that authority may not read refuses
the job whatever the account's standing (``AccessRefused``: 401/403, or 400 for an invalid role,
in the provider's shape, counted in ``counts["access_refused"]``), saying no more than the
provider would tell that authority.
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
from safeguards.adapters.csp.assumed_roles import ROLE_ARN
from safeguards.adapters.csp.batch_ledger import BatchEntry
from safeguards.adapters.csp.batch_routes import BatchProxy
from safeguards.adapters.csp.batches import BatchGate
from safeguards.adapters.csp.decision import BLOCK, TERMINATE_ACTION, Decision, refusal
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.gcs_store import GcsReader
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.input_errors import (
    AccessRefused,
    ObjectStoreError,
    ObjectUnreadable,
)
from safeguards.adapters.csp.job_outputs import JobOutputs, job_key, record_custom_id
from safeguards.adapters.csp.messages_api import BadRequest, json_object
from safeguards.adapters.csp.object_store import S3Reader
from safeguards.adapters.csp.provider_api import ProviderApi, ProviderCall
from safeguards.adapters.csp.routes import Route, Target
from safeguards.adapters.csp.vertex_api import VERTEX_API

log = logging.getLogger(__name__)

MAX_RECORDS = 50_000  # Bedrock's own ceiling for a job's records
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,2047}")  # ids, profiles, ARNs
_RECORD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_VERTEX_MODEL = re.compile(r"(?:projects/[^/]{1,64}/locations/[^/]{1,64}/)?"
                           r"publishers/anthropic/models/([A-Za-z0-9][A-Za-z0-9._@-]{0,127})")
_INTERVENED = "records the gate serves only with the safety prompt cannot be changed in a file"
_OUTPUT_CHECKED = ("records whose answers the gate must check cannot run as a job: its output "
                   "does not pass through the gate")


@dataclass(frozen=True, slots=True)
class JobInput:
    """What a job's creation says of its input: the model and the objects' URIs."""

    model: str
    uris: tuple[object, ...]
    bucket_owner: str | None = None
    role_arn: str = ""  # Bedrock's: the role that reads the input


@dataclass(frozen=True, slots=True)
class JobRefusal:
    """What refuses a job: the status, the message (no prompt text), the extra headers."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    action: str = "block"


def bedrock_job(body: bytes) -> JobInput:
    """A ``CreateModelInvocationJob`` body's model and input, validated."""
    doc = json_object(body)
    for name in ("jobName", "roleArn"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise BadRequest(400, f"{name}: field required (a non-empty string)")
    if not ROLE_ARN.fullmatch(doc["roleArn"]):
        raise BadRequest(400, "roleArn: expected an IAM role's ARN")
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
    return JobInput(model, (s3["s3Uri"],), owner, doc["roleArn"])


def vertex_job(body: bytes) -> JobInput:
    """A ``batchPredictionJobs.create`` body's Claude model and Cloud Storage input, validated
    (a BigQuery input cannot be read by the gate, so it is refused)."""
    doc = json_object(body)
    if not isinstance(doc.get("displayName"), str) or not doc["displayName"]:
        raise BadRequest(400, "displayName: field required (a non-empty string)")
    model = _VERTEX_MODEL.fullmatch(doc["model"]) if isinstance(doc.get("model"), str) else None
    if model is None:
        raise BadRequest(400, "model: expected publishers/anthropic/models/{model}")
    source = doc.get("inputConfig")
    if not isinstance(source, dict) or source.get("instancesFormat") != "jsonl":
        raise BadRequest(400, "inputConfig.instancesFormat: only jsonl")
    gcs = source.get("gcsSource")
    uris = gcs.get("uris") if isinstance(gcs, dict) else None
    if not isinstance(uris, list) or not uris:
        raise BadRequest(400, "inputConfig.gcsSource.uris: field required (the safety gate "
                              "checks Cloud Storage input only)")
    if not isinstance(doc.get("outputConfig"), dict):
        raise BadRequest(400, "outputConfig: field required (an object)")
    return JobInput(model.group(1), tuple(uris))


def job_records(objects: list[tuple[str, bytes]], model: str, api: ProviderApi,
                max_records: int = MAX_RECORDS) -> list[tuple[str, dict[str, Any]]]:
    """(record id, Messages params) of each line of the job's input objects (Bedrock's
    ``{"recordId", "modelInput"}``, Vertex's ``{"custom_id", "request"}``), each validated as
    the provider's body and turned into the Messages body the gate checks (the job's model
    named). Errors name the object's place in the input and the line's number, never text."""
    body_key, id_key = ("request", "custom_id") if api is VERTEX_API else ("modelInput",
                                                                          "recordId")
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    call = ProviderCall(api, model, False)
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
            model_input = record.get(body_key) if isinstance(record, dict) else None
            if not isinstance(model_input, dict):
                raise BadRequest(400, f"{where}: expected an object with {body_key}")
            record_id = record.get(id_key, f"line-{number}-{line_no}")
            if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
                raise BadRequest(400, f"{where}: {id_key}: 1 to 128 letters, digits, _.:-")
            if record_id in seen:  # its answer could not be told from the other's
                raise BadRequest(400, f"{where}: {id_key}: a duplicate")
            seen.add(record_id)
            try:
                api.parse(json.dumps(model_input).encode(), call)
            except BadRequest as exc:
                raise BadRequest(400, f"{where}: {body_key}: {exc}") from None
            params = {k: v for k, v in model_input.items() if k not in ("anthropic_version",
                                                                        "stream")}
            params["model"] = model
            out.append((record_id, params))
    if not out:
        raise BadRequest(400, "the job's input holds no records")
    return out


class JobGate:
    """Checks a provider's batch job at its creation (the records of its input file)."""

    def __init__(self, batches: BatchGate, s3: S3Reader | None = None,
                 gcs: GcsReader | None = None, *, max_records: int = MAX_RECORDS) -> None:
        self.batches = batches
        self.s3 = s3 or S3Reader()
        self.gcs = gcs or GcsReader()
        self.max_records = max_records
        self.outputs = JobOutputs(batches, lambda: self.s3, lambda: self.gcs)
        # forwarded, refused, bad_input, access_refused, unreadable_*
        self.counts: Counter[str] = Counter()

    async def answered(self, caller: Caller, api: ProviderApi, entry: BatchEntry | None,
                       answer: bytes, authorization: list[str]) -> None:
        """A job route's 200 answer, on either front end: a creation's admitted records
        remembered under the job's name, else (a status poll) an ended job's output observed
        in the background."""
        if entry is not None:
            key = job_key(api, _json(answer))
            if key is not None:
                await self.batches.remember(key, entry)
        else:
            self.outputs.poll(caller, api, answer, authorization)

    def settled(self, entry: BatchEntry | None) -> None:
        """A creation's exchange is over: admitted records the upstream did not take (no
        job's name seen) are observed as requests not served."""
        if entry is not None and not entry.batch_id:
            self.batches.unserved(entry)

    async def admit(self, caller: Caller, api: ProviderApi, body: bytes,
                    authorization: list[str] | None = None
                    ) -> tuple[JobRefusal | None, BatchEntry | None]:
        """The job's refusal, or None: every record passed, the job goes upstream unchanged.
        ``api``: Bedrock's or Vertex's; ``authorization``: the creation's ``Authorization``
        header values (a Vertex job's input is read with the caller's token). Raises
        ``BadRequest`` for a malformed job or input (answered in the provider's shape). The
        admitted records are not observed yet: once the upstream has taken the job, the caller
        remembers them under its name (``BatchGate.remember``) so its output is observed
        (``job_outputs``), else observes them as not served (``BatchGate.unserved``). The
        entry is None where nothing was admitted (refused records were observed)."""
        try:
            return await self._check(caller, api, body, authorization or [])
        except BadRequest:
            self.counts["bad_input"] += 1
            raise

    async def _check(self, caller: Caller, api: ProviderApi, body: bytes,
                     authorization: list[str]) -> tuple[JobRefusal | None, BatchEntry | None]:
        vertex = api is VERTEX_API
        job = vertex_job(body) if vertex else bedrock_job(body)
        gate = self.batches.gate
        standing = gate.peek(caller.account, gate_now(), caller.aggregates)
        if standing.flags & BLOCK:
            gate.count(standing)
            self.counts["refused"] += 1
            return _refused(standing, "this account may not create batch jobs"), None
        try:
            objects = await (
                self.gcs.read(list(job.uris), authorization) if vertex else
                self.s3.read(job.uris[0], job.role_arn, caller.account, job.bucket_owner))
        except AccessRefused as exc:
            self.counts["access_refused"] += 1
            log.info("a batch job refused: its authority may not read its input (%s)",
                     exc.reason)
            return JobRefusal(exc.status, str(exc)), None
        except ObjectUnreadable as exc:
            if standing.flags or standing.refused or not gate.synced:
                self.counts["unreadable_refused"] += 1
                log.warning("a batch job refused: its input was unreadable (%s)", exc.reason)
                return JobRefusal(503, f"{exc}; the safety gate checks every record before a "
                                       "job starts", (("retry-after", "5"),)), None
            self.counts["unreadable_forwarded"] += 1
            log.warning("a batch job forwarded unchecked: its input was unreadable (%s)",
                        exc.reason)
            return None, None
        except ObjectStoreError as exc:
            raise BadRequest(exc.status, str(exc)) from None
        records = job_records(objects, job.model, api, self.max_records)
        return await self._records(caller, records)

    async def _records(self, caller: Caller, records: list[tuple[str, dict[str, Any]]]
                       ) -> tuple[JobRefusal | None, BatchEntry | None]:
        # the batch gate's custom_ids: a recordId may not fit them (the same in the output)
        batch = {"requests": [{"custom_id": record_custom_id(record_id), "params": params}
                              for record_id, params in records]}
        submission = await self.batches.submit(caller, json.dumps(batch).encode())
        entry = submission.entry  # refused records were observed by submit
        changed = sum(item.decision.safety_prompt for item in entry.admitted.values())
        unchecked = sum(item.decision.classify_stream and not item.decision.safety_prompt
                        for item in entry.admitted.values())
        refused = len(entry.refused) + changed + unchecked
        if not refused:
            self.counts["forwarded"] += 1
            log.info("a batch job forwarded: %d records checked", len(records))
            return None, entry
        self.batches.unserved(entry)
        self.counts["refused"] += 1
        log.info("a batch job refused: %d of %d records refused", refused, len(records))
        first = submission.first_refusal
        what = f"{refused} of {len(records)} records refused by the safety gate"
        if first is None and changed:
            return JobRefusal(403, f"{what}: {_INTERVENED}", (), "intervene"), None
        if first is None:
            return JobRefusal(403, f"{what}: {_OUTPUT_CHECKED}", (), TERMINATE_ACTION), None
        return _refused(first, what), None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _refused(decision: Decision, what: str) -> JobRefusal:
    message, extra = refusal(decision)
    return JobRefusal(decision.status, f"{what}: {message}", extra, decision.action)


class JobProxy(BatchProxy, Protocol):
    """What the job routes use of the HTTP proxy (``proxy.CspProxy``)."""

    jobs: JobGate


async def serve_job(proxy: JobProxy, scope: Scope, receive: Receive, send: Send,
                    target: Target) -> None:
    """The providers' batch job routes on the HTTP proxy: a creation checked record by record,
    the others (list, get, stop, cancel, delete) with the caller's identity checked and a
    blocked account refused."""
    caller, body, forward = await proxy._caller_and_body(scope, receive)
    if body is None:
        return  # the client went away
    api = target.call.api
    authorization = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
    if target.route is Route.JOB_CREATE:
        refused, entry = await proxy.jobs.admit(target.call.caller(caller), api, body,
                                                authorization)
        if refused is not None:
            await send_api_error(send, api, refused.status, refused.message, (
                *((k.encode(), v.encode()) for k, v in refused.headers),
                action_header(refused.action)))
            return
        try:
            await _relay(proxy, scope, send, target, body, forward, entry, authorization,
                         target.call.caller(caller))
        finally:
            proxy.jobs.settled(entry)
        return
    if await proxy.refused_by_standing(send, target.call.caller(caller), api):
        return
    await _relay(proxy, scope, send, target, body, forward, None, authorization,
                 target.call.caller(caller))


async def _relay(proxy: JobProxy, scope: Scope, send: Send, target: Target, body: bytes,
                 forward: list[tuple[bytes, bytes]], entry: BatchEntry | None,
                 authorization: list[str], caller: Caller) -> None:
    """The request upstream and its answer back: a creation's admitted records remembered
    under the job's name once the upstream took it, an ended job's output observation started
    on a get (``job_outputs``: in the background, the answer sent at once)."""
    api = target.call.api
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
        if response.status == 200 and (entry is not None or scope["method"] == "GET"):
            await proxy.jobs.answered(caller, api, entry, answer, authorization)
        kept = [(k, v) for k, v in response.headers.items() if k in api.upstream_error_headers]
        content_type = response.headers.get(b"content-type", b"application/json")
        await respond(send, response.status, answer, (b"content-type", content_type), *kept)
    finally:
        await response.aclose()
