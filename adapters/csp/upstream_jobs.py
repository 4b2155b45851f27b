"""The model stand-in's Bedrock batch inference jobs (``CreateModelInvocationJob`` and the job
reads), for demos and tests: a job is validated as Bedrock validates its body, answered with its
``jobArn`` in Bedrock's shape and kept in memory (``Submitted``; the stand-in runs no job)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.provider_batch_jobs import bedrock_job

_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"


def _error(status: int, message: str) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
    answer = BEDROCK_API.error(status, message)
    return answer.status, answer.body, answer.headers


class JobStore:
    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.last_body: dict[str, Any] | None = None  # the last creation as it came (for tests)

    def create(self, body: bytes) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
        try:
            bedrock_job(body)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        doc = json.loads(body)
        self.created += 1
        self.last_body = doc
        job_id = secrets.token_hex(6)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._jobs[job_id] = {
            "jobArn": _ARN + job_id, "jobName": doc["jobName"], "modelId": doc["modelId"],
            "roleArn": doc["roleArn"], "status": "Submitted", "submitTime": now,
            "lastModifiedTime": now, "inputDataConfig": doc["inputDataConfig"],
            "outputDataConfig": doc["outputDataConfig"]}
        return 200, json.dumps({"jobArn": _ARN + job_id}).encode(), ()

    def read(self, method: str, path: str) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
        """List, get, stop (``path`` normalised by the route table)."""
        if path == "/model-invocation-jobs":
            summaries = list(reversed(self._jobs.values()))
            return 200, json.dumps({"invocationJobSummaries": summaries}).encode(), ()
        parts = path.split("/")  # "", model-invocation-job, {id or ARN}, [stop]
        job = self._jobs.get(unquote(parts[2]).removeprefix(_ARN))
        if job is None:
            return _error(404, "no such model invocation job")
        if method == "POST":  # stop
            job["status"] = "Stopping"
            return 200, b"{}", ()
        return 200, json.dumps(job).encode(), ()
