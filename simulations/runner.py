"""Sends a plan through the real inline proxy with the official ``anthropic`` SDK, and records it.

Each account's requests go in order, paced by the plan; accounts run concurrently (bounded).
Every request becomes one trace record (JSONL). Traces hold the synthetic prompts so that a run
can be replayed against another policy or build; they are red-team inputs, not logs, and the
service itself never stores or logs prompt text.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import anyio

from safeguards.simulations.plan import PlannedRequest

ACCOUNT_HEADER = "x-csp-account-id"
ORGANIZATION_HEADER = "x-csp-organization-id"
MODEL = "claude-sim-1"


@dataclass(frozen=True, slots=True)
class TraceRecord:
    persona: str
    kind: str
    account: str
    region: str
    seq: int
    offset_s: float
    sent_at: str  # ISO time the request left the client
    harmful: bool
    stream: bool
    abusive_volume: bool
    prompt: str
    status: int
    outcome: str  # served | refused | blocked | throttled | error
    stop_reason: str | None
    error_type: str | None
    latency_ms: float
    organization: str | None = None
    # what the gate did with a request it let through (``x-safeguards-action``: allow, annotate,
    # intervene = served with the safety system prompt); None where it refused it, or unknown
    action: str | None = None
    attempts: int = 1  # sent this many times: a 529 is retried (``OVERLOADED_RETRIES``)

    @property
    def sent(self) -> datetime:
        return datetime.fromisoformat(self.sent_at)


class Progress:
    """A one-line progress report on stderr, refreshed at most every ``every_s`` seconds."""

    def __init__(self, total: int, every_s: float = 1.0, out: Any = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.outcomes: dict[str, int] = defaultdict(int)
        self.every_s = every_s
        self.out = out
        self._last = 0.0

    def add(self, record: TraceRecord) -> None:
        self.done += 1
        self.outcomes[record.outcome] += 1
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
            print(f"\r[simulate] {self.done}/{self.total} requests: {parts}   ", end="",
                  file=self.out, flush=True)
            if self.done == self.total:
                print(file=self.out, flush=True)


# status, outcome, stop reason, error type, the gate's action (``x-safeguards-action``)
Sent = tuple[int, str, str | None, str | None, str | None]
ACTION_HEADER = "x-safeguards-action"
# A 529 overloaded_error (the gate could not have the prompt screened in time) is sent again up
# to this many times, this long after, as the official SDKs do by default (two retries, after
# the answer's retry-after of 1 s); a 429 throttle is not (the plan's pacing is the client's).
OVERLOADED_RETRIES = 2
OVERLOADED_RETRY_AFTER_S = 1.0


async def _send(client: anthropic.AsyncAnthropic, req: PlannedRequest) -> Sent:
    messages: list[Any] = [{"role": "user", "content": req.prompt}]
    try:
        if req.stream:
            async with client.messages.stream(model=MODEL, max_tokens=256,
                                              messages=messages) as stream:
                action = stream.response.headers.get(ACTION_HEADER)
                async for _ in stream.text_stream:
                    pass
                final = await stream.get_final_message()
            stop = final.stop_reason
        else:
            raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=256,
                                                                 messages=messages)
            action = raw.headers.get(ACTION_HEADER)
            stop = (await raw.parse()).stop_reason
    except anthropic.RateLimitError as exc:
        return exc.status_code, "throttled", None, "rate_limit_error", None
    except anthropic.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
        error_type = str(err.get("type", type(exc).__name__))
        # 403 is a block; 529 is the gate failing closed (screening could not answer in time
        # for an account under it): both are refusals of ours, not failures of the run.
        refused = (exc.status_code == 403 and error_type == "permission_error") or (
            exc.status_code == 529 and error_type == "overloaded_error")
        outcome = "blocked" if refused else "error"
        return exc.status_code, outcome, None, error_type, None
    except anthropic.APIError as exc:  # connection failures, a stream cut mid-way
        return 0, "error", None, type(exc).__name__, None
    return 200, ("refused" if stop == "refusal" else "served"), stop, None, action


async def send_retrying_overloaded(client: anthropic.AsyncAnthropic, req: PlannedRequest
                                   ) -> tuple[Sent, int]:
    """``req`` sent, and again after a 529 overloaded_error (``OVERLOADED_RETRIES``); what the
    last attempt got, and how many were made."""
    attempts = 1
    sent = await _send(client, req)
    while (sent[0], sent[3]) == (529, "overloaded_error") and attempts <= OVERLOADED_RETRIES:
        await anyio.sleep(OVERLOADED_RETRY_AFTER_S)
        attempts += 1
        sent = await _send(client, req)
    return sent, attempts


async def run_plan(
    plan: list[PlannedRequest],
    proxies: dict[str, str],
    *,
    concurrency: int = 32,
    account_header: str = ACCOUNT_HEADER,
    on_record: Callable[[TraceRecord], None] | None = None,
    speed: float = 1.0,
) -> list[TraceRecord]:
    """Send ``plan`` through the proxy of each request's region; return the trace."""
    by_account: dict[str, list[PlannedRequest]] = defaultdict(list)
    for req in plan:
        by_account[req.account].append(req)
    records: list[TraceRecord] = []
    limiter = anyio.CapacityLimiter(concurrency)
    clients: dict[str, anthropic.AsyncAnthropic] = {
        region: anthropic.AsyncAnthropic(base_url=url, api_key="simulation", max_retries=0,
                                         timeout=30.0)
        for region, url in proxies.items()
    }
    start = time.monotonic()

    async def account_worker(requests: list[PlannedRequest]) -> None:
        async with limiter:
            for req in sorted(requests, key=lambda r: r.seq):
                delay = start + req.offset_s / speed - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                identity = {account_header: req.account}
                if req.organization is not None:
                    identity[ORGANIZATION_HEADER] = req.organization
                client = clients[req.region].with_options(default_headers=identity)
                sent_at = datetime.now(UTC)
                t0 = time.perf_counter()
                (status, outcome, stop, error_type, action), attempts = \
                    await send_retrying_overloaded(client, req)
                record = TraceRecord(
                    req.persona, req.kind, req.account, req.region, req.seq, req.offset_s,
                    sent_at.isoformat(), req.harmful, req.stream, req.abusive_volume, req.prompt,
                    status, outcome, stop, error_type, (time.perf_counter() - t0) * 1000,
                    req.organization, action, attempts)
                records.append(record)
                if on_record is not None:
                    on_record(record)

    try:
        async with anyio.create_task_group() as tg:
            for requests in by_account.values():
                tg.start_soon(account_worker, requests)
    finally:
        for client in clients.values():
            await client.close()
    return sorted(records, key=lambda r: (r.sent_at, r.account, r.seq))


def write_trace(records: list[TraceRecord], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(asdict(r), sort_keys=True) + "\n")


def read_trace(path: Path) -> list[TraceRecord]:
    return [TraceRecord(**json.loads(line)) for line in path.read_text("utf-8").splitlines()
            if line.strip()]


def replay_plan(trace: list[TraceRecord], run_id: str) -> list[PlannedRequest]:
    """The plan that re-sends a recorded trace, on fresh accounts named for ``run_id`` (the
    original accounts carry the enforcement they earned)."""
    out = []
    for r in trace:
        account = f"{r.account}-replay-{run_id}"
        organization = None if r.organization is None else f"{r.organization}-replay-{run_id}"
        out.append(PlannedRequest(r.persona, r.kind, account, r.region, r.seq, r.offset_s,
                                  r.prompt, r.harmful, r.stream, r.abusive_volume,
                                  organization))
    return out
