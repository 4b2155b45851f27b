"""The model stand-in's batch jobs, for demos and tests: Bedrock's batch inference
(``CreateModelInvocationJob`` and the job reads) and Vertex AI's batch prediction jobs. A job is
validated as the provider validates its body, answered in the provider's shape (a ``jobArn``;
a ``BatchPredictionJob`` resource) and kept in memory; a test runs one (``JobStore.complete``):
each record answered, the output written where the provider writes it, the job ended."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.provider_api import ProviderApi
from safeguards.adapters.csp.provider_batch_jobs import bedrock_job, vertex_job
from safeguards.adapters.csp.vertex_api import VERTEX_API

_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


def _error(api: ProviderApi, status: int, message: str) -> Answer:
    answer = api.error(status, message)
    return answer.status, answer.body, answer.headers


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class JobStore:
    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}  # Bedrock's job id or Vertex's name -> job
        self.created = 0
        self.last_body: dict[str, Any] | None = None  # the last creation as it came (for tests)

    def create(self, api: ProviderApi, path: str, body: bytes) -> Answer:
        """A job created (``path`` normalised by the route table)."""
        try:
            (vertex_job if api is VERTEX_API else bedrock_job)(body)
        except BadRequest as exc:
            return _error(api, exc.status, str(exc))
        doc = json.loads(body)
        self.created += 1
        self.last_body = doc
        if api is VERTEX_API:
            name = f"{path.removeprefix('/v1/')}/{secrets.randbelow(10**18)}"
            self._jobs[name] = {
                "name": name, "displayName": doc["displayName"], "model": doc["model"],
                "inputConfig": doc["inputConfig"], "outputConfig": doc["outputConfig"],
                "state": "JOB_STATE_PENDING", "createTime": _now(), "updateTime": _now()}
            return 200, json.dumps(self._jobs[name]).encode(), ()
        job_id = secrets.token_hex(6)
        self._jobs[job_id] = {
            "jobArn": _ARN + job_id, "jobName": doc["jobName"], "modelId": doc["modelId"],
            "roleArn": doc["roleArn"], "status": "Submitted", "submitTime": _now(),
            "lastModifiedTime": _now(), "inputDataConfig": doc["inputDataConfig"],
            "outputDataConfig": doc["outputDataConfig"]}
        return 200, json.dumps({"jobArn": _ARN + job_id}).encode(), ()

    def read(self, api: ProviderApi, method: str, path: str) -> Answer:
        """List, get, stop (Bedrock); list, get, cancel, delete (Vertex)."""
        if api is VERTEX_API:
            return self._vertex(method, path)
        if path == "/model-invocation-jobs":
            summaries = [j for j in reversed(self._jobs.values()) if "jobArn" in j]
            return 200, json.dumps({"invocationJobSummaries": summaries}).encode(), ()
        parts = path.split("/")  # "", model-invocation-job, {id or ARN}, [stop]
        job = self._jobs.get(unquote(parts[2]).removeprefix(_ARN))
        if job is None:
            return _error(BEDROCK_API, 404, "no such model invocation job")
        if method == "POST":  # stop
            job["status"] = "Stopping"
            return 200, b"{}", ()
        return 200, json.dumps(job).encode(), ()

    def _vertex(self, method: str, path: str) -> Answer:
        name = path.removeprefix("/v1/")
        if name.endswith("/batchPredictionJobs"):
            listed = [j for j in reversed(self._jobs.values())
                      if str(j.get("name", "")).startswith(name + "/")]
            return 200, json.dumps({"batchPredictionJobs": listed}).encode(), ()
        job = self._jobs.get(name.removesuffix(":cancel"))
        if job is None:
            return _error(VERTEX_API, 404, "no such batch prediction job")
        if method == "DELETE":
            del self._jobs[job["name"]]
            done = {"name": job["name"] + "/operations/1", "done": True}
            return 200, json.dumps(done).encode(), ()
        if name.endswith(":cancel"):
            job["state"] = "JOB_STATE_CANCELLING"
            return 200, b"{}", ()
        return 200, json.dumps(job).encode(), ()

    def complete(self, key: str, read: Callable[[str], bytes],
                 write: Callable[[str, bytes], None], reply: str = "Here is the answer.") -> str:
        """Runs a job as its provider would: reads its input (``read(uri)``; one object), answers
        each record with ``reply`` and writes the output (``write(uri, data)``) where the
        provider writes it, then ends the job; the output object's URI. ``key``: Bedrock's job
        ARN or id, Vertex's resource name."""
        job = self._jobs[key.removeprefix(_ARN)]
        vertex = "name" in job
        uri = (job["inputConfig"]["gcsSource"]["uris"][0] if vertex else
               job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        lines = []
        for line in read(uri).split(b"\n"):
            if not line.strip():
                continue
            record = json.loads(line)
            usage = {"input_tokens": 10, "output_tokens": max(1, len(reply) // 4)}
            message = {"id": "msg_" + secrets.token_hex(12), "type": "message",
                       "role": "assistant", "model": job.get("modelId", job.get("model")),
                       "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": usage}
            lines.append({**record, "response": message, "status": ""} if vertex else
                         {**record, "modelOutput": message})
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        if vertex:
            prefix = job["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
            folder = f"{prefix}/prediction-{key.rsplit('/', 1)[-1]}"
            out = f"{folder}/predictions_00001.jsonl"
            job.update(state="JOB_STATE_SUCCEEDED", updateTime=_now(),
                       outputInfo={"gcsOutputDirectory": folder})
        else:
            prefix = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].rstrip("/")
            folder = f"{prefix}/{job['jobArn'].removeprefix(_ARN)}"
            out = f"{folder}/{uri.rsplit('/', 1)[-1]}.out"
            write(f"{folder}/manifest.json.out", json.dumps(
                {"processedRecordCount": len(lines), "successRecordCount": len(lines)}).encode())
            job.update(status="Completed", lastModifiedTime=_now())
        write(out, data)
        return out
