"""The model stand-in's Message Batches (``/v1/messages/batches``), for demos and tests.

A batch is answered at once by the stand-in's script (each request's directives apply, so a
test can script one request of a batch to fail), and kept in memory: create, list, retrieve,
cancel, delete and the results as JSON Lines, in the Messages API's shapes. ``results_url``
names the server the client called (its ``host``), as the real API names its own.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from safeguards.adapters.csp.messages_api import BadRequest, error_body, parse_messages_request

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_REQUESTS = 100_000


class _Script(Protocol):
    def scripted(self, doc: dict[str, Any]) -> Any: ...
    def message(self, doc: dict[str, Any], model: str, reply: str) -> dict[str, Any]: ...


def batch_requests(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (custom_id, params) of a batch creation body, each params a valid Messages body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "request body is not valid JSON") from None
    requests = doc.get("requests") if isinstance(doc, dict) else None
    if not isinstance(requests, list) or not 0 < len(requests) <= MAX_REQUESTS:
        raise BadRequest(400, f"requests: expected an array of 1 to {MAX_REQUESTS} requests")
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            raise BadRequest(400, f"requests.{i}: expected an object with custom_id and params")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise BadRequest(400, f"requests.{i}.custom_id: 1 to 64 letters, digits, _ or -")
        if custom_id in seen:
            raise BadRequest(400, f"requests.{i}.custom_id: duplicate")
        seen.add(custom_id)
        params = item["params"]
        if params.get("stream", False) is not False:
            raise BadRequest(400, f"requests.{i}.params.stream: a batch does not stream")
        try:
            parse_messages_request(json.dumps(params).encode())
        except BadRequest as exc:
            raise BadRequest(400, f"requests.{i}.params: {exc}") from None
        out.append((custom_id, params))
    return out


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class BatchStore:
    def __init__(self, script: _Script) -> None:
        self.script = script
        self._batches: dict[str, dict[str, Any]] = {}
        self._results: dict[str, list[dict[str, Any]]] = {}
        self.created = 0
        self.last_requests: list[tuple[str, dict[str, Any]]] = []  # (for tests)

    def create(self, body: bytes, base_url: str) -> tuple[int, bytes]:
        try:
            requests = batch_requests(body)
        except BadRequest as exc:
            return exc.status, error_body(exc.status, str(exc))
        self.created += 1
        self.last_requests = requests
        batch_id = "msgbatch_" + secrets.token_hex(12)
        results: list[dict[str, Any]] = []
        for custom_id, params in requests:
            scripted = self.script.scripted(params)
            if scripted.status != 200:
                result: dict[str, Any] = {"type": "errored", "error": json.loads(
                    error_body(scripted.status, "scripted upstream failure"))}
            else:
                result = {"type": "succeeded", "message": self.script.message(
                    params, params["model"], scripted.reply)}
            results.append({"custom_id": custom_id, "result": result})
        now = datetime.now(UTC)
        errored = sum(1 for r in results if r["result"]["type"] == "errored")
        self._batches[batch_id] = {
            "id": batch_id, "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": len(results) - errored,
                               "errored": errored, "canceled": 0, "expired": 0},
            "created_at": _iso(now), "ended_at": _iso(now),
            "expires_at": _iso(now + timedelta(days=1)), "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch_id}/results"}
        self._results[batch_id] = results
        return 200, json.dumps(self._batches[batch_id]).encode()

    def read(self, method: str, path: str, base_url: str) -> tuple[int, bytes]:
        """List, retrieve, cancel, delete, results (``path`` normalised by the route table)."""
        parts = path.split("/")  # "", v1, messages, batches, [id, [results|cancel]]
        if len(parts) == 4:
            data = list(reversed(self._batches.values()))
            return 200, json.dumps({"data": data, "has_more": False,
                                    "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None}).encode()
        batch = self._batches.get(parts[4])
        if batch is None:
            return 404, error_body(404, "no such message batch")
        if len(parts) == 6 and parts[5] == "results":
            return 200, b"".join(json.dumps(r).encode() + b"\n"
                                 for r in self._results[batch["id"]])
        if method == "DELETE":
            del self._batches[batch["id"]], self._results[batch["id"]]
            return 200, json.dumps({"id": batch["id"], "type": "message_batch_deleted"}).encode()
        return 200, json.dumps(batch).encode()  # retrieve; cancel: it has already ended
