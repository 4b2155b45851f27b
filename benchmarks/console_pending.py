"""Server time of the console's pending-approvals and appeals pages on a region with ~100k
events, before and after migration 0010's partial indexes, in one run on one database.

Seeds a scratch database (embedded PostgreSQL, or a scratch database on
SAFEGUARDS_DATABASE_URL's server) migrated to 0009: ``--accounts`` accounts of ``--events``
events each (requests and scores), of which a few also have an action awaiting approval (some
lapsed, outside the page's window) or an appeal (some resolved). Serves the console, signs in as
a registered admin and GETs ``/approvals`` and ``/appeals`` ``--runs`` times each (every one
audited in the store, as in production); then migrates to head on the same seeded table (the
time that takes is reported: the index builds hold off appends meanwhile) and measures again.
The queries' plans, before and after, are printed.

    python benchmarks/console_pending.py [--accounts 2000] [--events 50] [--runs 20]

Last line: {"events", "accounts", "approvals_rows", "appeals_rows", "migrate_0010_ms",
"before": {"approvals_p50_ms", "approvals_p95_ms", "appeals_p50_ms", "appeals_p95_ms"},
"after": {...}, "runs"}
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
import httpx
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from safeguards.adapters.csp.serving import serving
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.migrate import alembic_config, async_url
from safeguards.adapters.store.pg_sql import NEWEST_OF_TYPES
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    ApprovalRequested,
    Event,
    EventBody,
    RequestObserved,
    ScoreRecorded,
)
from safeguards.core.ports import AppendRequest
from safeguards.ops.console.app import ConsoleConfig, build_console
from safeguards.ops.console.auth import make_token

REGION = "eu"
BEFORE = "0009"
EVERY = 100  # one account in EVERY has an action awaiting approval, one more an appeal


def bodies(i: int, n: int, now: datetime) -> list[tuple[datetime, EventBody]]:
    """Account ``i``'s history: ``n`` requests and scores (the accounts' spread over the last
    36 hours: most within the approvals page's one-day window), then perhaps
    an approval request (recent, or lapsed) or an appeal (open, or resolved)."""
    start = now - timedelta(hours=36)
    out: list[tuple[datetime, EventBody]] = []
    for v in range(n):
        at = start + timedelta(seconds=i * 60 + v * 30)
        out.append((at, RequestObserved(f"r{v}", "m", "proxy", 10, 20, 30, "0" * 64, False,
                                        "allow") if v % 2 == 0 else
                    ScoreRecorded(f"r{v - 1}", "prompt", "1" * 64, 30, "clf", "1",
                                  (("cyber", 0.1),))))
    kind, lapsed = i % EVERY, (i // EVERY) % 2 == 1
    if kind == 0:
        at = now - timedelta(days=3 if lapsed else 0, minutes=5)
        out.append((at, ApprovalRequested("alice", "set_level", 5, None, "case file")))
    elif kind == 1:
        at = now - timedelta(days=2)
        out.append((at, AppealFiled(f"ap-{i}", "user", "not me")))
        if lapsed:
            out.append((at + timedelta(hours=1),
                        AppealResolved(f"ap-{i}", "alice", "upheld", 1, "checked")))
    return out


async def seed(store: PostgresEventStore, accounts: int, n: int, now: datetime) -> int:
    total = 0
    for i in range(accounts):
        account = f"acct:bench-{i:05d}"
        events = tuple(Event(f"{account}/{v}", account, REGION, v, at, f"c{v}", "corr", None, b)
                       for v, (at, b) in enumerate(bodies(i, n, now), start=1))
        await store.append(AppendRequest(account, 0, events))
        total += len(events)
    return total


async def upgrade_to(url: str, revision: str) -> None:
    def upgrade(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
    finally:
        await engine.dispose()


async def plans(url: str, now: datetime) -> list[str]:
    """The plans of the two pages' candidate queries (their first page), and of one account's
    appeals."""
    from safeguards.ops.console.approvals import _APPEAL_ACCOUNTS, _APPROVAL_ACCOUNTS, PAGE

    engine = create_async_engine(async_url(url))
    out = []
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE events"))
            for query, params in ((_APPROVAL_ACCOUNTS, {"since": now - timedelta(days=1)}),
                                  (_APPEAL_ACCOUNTS, {})):
                rows = await conn.execute(sa.text("EXPLAIN ANALYZE " + str(query)),
                                          {**params, "after": "", "limit": PAGE})
                out.append("\n".join(r[0] for r in rows))
            rows = await conn.execute(  # an appeal's account: its appeals (select_events)
                sa.text("EXPLAIN ANALYZE " + NEWEST_OF_TYPES.replace("$1", ":account")
                        .replace("$2::text[]", ":types").replace("$3", ":limit")
                        .replace("$4", ":after")),
                {"account": "acct:bench-00001", "types": [AppealFiled.TYPE], "limit": 500,
                 "after": 0})
            out.append("\n".join(r[0] for r in rows))
            await conn.rollback()
    finally:
        await engine.dispose()
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_pages(url: str, runs: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    times: dict[str, list[float]] = {"approvals": [], "appeals": []}
    rows: dict[str, int] = {}
    async with (serving(build_console(ConsoleConfig(REGION, url)), "127.0.0.1",
                        free_port()) as console,
                httpx.AsyncClient(base_url=console, timeout=60.0) as client):
        await client.get("/login")
        await client.post("/login", data={"pre": client.cookies.get("sg_console_pre"),
                                          "token": make_token(REGION, "bench", time.time())})
        for name in times:  # warm: the server's plans, the console's caches
            answer = await client.get(f"/{name}")
            answer.raise_for_status()
            rows[name] = answer.text.count("<tr class=")
        for _ in range(runs):
            for name in times:
                t = time.perf_counter()
                answer = await client.get(f"/{name}")
                times[name].append((time.perf_counter() - t) * 1000)
                answer.raise_for_status()
    return times, rows


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    out = {}
    for name, values in times.items():
        out[f"{name}_p50_ms"] = round(statistics.median(values), 1)
        out[f"{name}_p95_ms"] = round(p(values, 0.95), 1)
    return out


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    await upgrade_to(url, BEFORE)
    now = datetime.now(UTC)
    t = time.perf_counter()
    async with PostgresEventStore(REGION, url) as store:
        events = await seed(store, args.accounts, args.events, now)
    print(f"stored {events:,} events in {time.perf_counter() - t:.1f} s", flush=True)
    add_operator(REGION, "bench", "admin")
    before_plans = await plans(url, now)
    before, rows = await timed_pages(url, args.runs)
    t = time.perf_counter()
    await migrate(url)
    migrate_ms = (time.perf_counter() - t) * 1000
    after_plans = await plans(url, now)
    after, rows_after = await timed_pages(url, args.runs)
    assert rows == rows_after, (rows, rows_after)
    for label, shown in (("before", before_plans), ("after", after_plans)):
        for plan in shown:
            print(f"--- {label}\n{plan}")
    return {"events": events, "accounts": args.accounts, "approvals_rows": rows["approvals"],
            "appeals_rows": rows["appeals"], "migrate_0010_ms": round(migrate_ms, 1),
            "before": summary(before), "after": summary(after), "runs": args.runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50, help="ordinary events per account")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ["SAFEGUARDS_STATE_DIR"] = tempfile.mkdtemp(prefix="sg-console-pending-")
    try:
        with scratch_database() as url:
            result = anyio.run(run, url, args)
    finally:
        shutil.rmtree(os.environ["SAFEGUARDS_STATE_DIR"], ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
