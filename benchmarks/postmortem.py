"""``ops timeline`` report generation for a region with ~100k events in a day's window.

A scratch database (embedded PostgreSQL, or a scratch database on SAFEGUARDS_DATABASE_URL's
server) gets ``--accounts`` histories over 24 hours, ``--events`` in all: requests (one in a
hundred on a fail-open fallback, in two bursts), enforcement changes under five rules each with
its outbox row, and operator actions. Then the report is built ``--runs`` times as the command
builds it (the reader's role checked, the read audited, every figure read from the store; no
NATS, so dead letters are said to be unread) and rendered to HTML.

    python benchmarks/postmortem.py [--events 100000] [--accounts 1000] [--runs 3]

One JSON line: {"events", "accounts", "fallback_requests", "enforcement_changes",
"read_ms_p50", "read_ms_max", "render_ms_p50", "report_bytes", "seed_s", "runs"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.events import (
    EnforcementChanged,
    Event,
    EventBody,
    OperatorActionTaken,
    RequestObserved,
)
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.ops.postmortem_html import postmortem_html
from safeguards.ops.timeline_cli import build_postmortem

REGION = "eu"
RULES = ("escalate.points", "ladder.l1", "link.enforced", "review.confirmed", "cyber.fast")


def _body(i: int, at: datetime, start: datetime) -> EventBody:
    burst = timedelta(hours=6) <= at - start < timedelta(hours=6, minutes=15) or \
        timedelta(hours=15) <= at - start < timedelta(hours=15, minutes=15)
    if i % 50 == 7:
        return EnforcementChanged(level=1 + i % 4, previous_level=i % 4, expires_at=None,
                                  reason="over threshold", rule_id=RULES[i % len(RULES)],
                                  risk_total=2.0, caused_by_version=1)
    if i % 997 == 3:
        return OperatorActionTaken(operator="oncall", action="clear", level=None,
                                   expires_at=None, reason="checked")
    return RequestObserved(request_id=f"r{i}", model="m", surface="proxy", input_tokens=10,
                           output_tokens=20, prompt_chars=30, prompt_sha256="0" * 64,
                           streamed=False, action="allow",
                           fallback="open:screen_classifier_timeout" if burst and i % 3 == 0
                           else None)


async def seed(url: str, events: int, accounts: int, start: datetime) -> dict[str, int]:
    per = events // accounts
    step = timedelta(days=1) / per
    counts = {"fallback_requests": 0, "enforcement_changes": 0}
    async with PostgresEventStore(REGION, url, pool_size=4) as store:
        for a in range(accounts):
            account = f"acct-{a:05d}"
            batch: list[Event] = []
            outbox: list[OutboxMessage] = []
            for v in range(1, per + 1):
                at = start + step * (v - 1) + timedelta(seconds=a % 60)
                body = _body(a * per + v, at, start)
                if isinstance(body, RequestObserved) and body.fallback:
                    counts["fallback_requests"] += 1
                if isinstance(body, EnforcementChanged):
                    counts["enforcement_changes"] += 1
                    outbox.append(OutboxMessage(f"{account}-{v}", f"sg.eu.enforce.{account}",
                                                b"\x80"))
                batch.append(Event(f"{account}/{v}", account, REGION, v, at, f"c{v}", "corr",
                                   None, body))
            await store.append(AppendRequest(account, 0, tuple(batch), None, tuple(outbox)))
    return counts


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    await migrate(url)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    counts = await seed(url, args.events, args.accounts, now - timedelta(hours=24))
    seed_s = time.perf_counter() - started
    cli = argparse.Namespace(region=REGION, since="-25h", until="now", operator="bench",
                             database_url=url, nats=None, ops_command="timeline")
    reads, renders, size = [], [], 0
    for _ in range(args.runs):
        t0 = time.perf_counter()
        pm = await build_postmortem(cli)
        t1 = time.perf_counter()
        page = postmortem_html(pm, "bench", datetime.now(UTC))
        reads.append((t1 - t0) * 1000)
        renders.append((time.perf_counter() - t1) * 1000)
        size = len(page.encode())
        assert sum(pm.fail_open) == counts["fallback_requests"], "a fallback went unread"
        assert sum(m.changes for m in pm.rules.values()) == counts["enforcement_changes"]
    return {"events": args.accounts * (args.events // args.accounts),
            "accounts": args.accounts, **counts,
            "read_ms_p50": round(statistics.median(reads), 1), "read_ms_max": round(max(reads), 1),
            "render_ms_p50": round(statistics.median(renders), 1), "report_bytes": size,
            "seed_s": round(seed_s, 1), "runs": args.runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["SAFEGUARDS_STATE_DIR"] = tempfile.mkdtemp(prefix="sg-postmortem-bench-")
    os.environ.pop("SAFEGUARDS_NATS_URL", None)
    try:
        add_operator(REGION, "bench", "analyst")
        with scratch_database() as url:
            result = anyio.run(run, url, args)
    finally:
        shutil.rmtree(os.environ["SAFEGUARDS_STATE_DIR"], ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
