"""Backtest rate over a stored history of >= 1M events in (embedded) PostgreSQL.

Builds the history with the real pure core (signals through ``decide``), stores it with the
region store's group commit, then backtests a candidate policy (jailbreak strikes weigh 1.5,
not 1.0) over the whole region and reports events replayed per second, end to end (reads
included), against the baseline of the same run: a raw ordered COPY-out of the same rows (the
feed's columns, in position order), the fastest the database can hand them over. Each is timed
``--runs`` times, alternating; medians are reported.

    python benchmarks/backtest.py [--accounts 5000] [--signals-per-account 200]

Uses a scratch database on SAFEGUARDS_DATABASE_URL's server when set, else embedded PostgreSQL.
Last line: {"events", "accounts", "backtest_events_per_s", "copy_rows_per_s", "ratio",
"runs_backtest_s", "runs_copy_s", "differing_accounts"}
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg

from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.decide import decide
from safeguards.core.events import Event, RequestObserved, ScoreRecorded, Signal
from safeguards.core.policy import default_policy, default_policy_text, parse_policy
from safeguards.core.ports import AppendRequest
from safeguards.core.state import fold, initial_state
from safeguards.ops.backtest import BacktestReport, backtest_region

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def account_history(account: str, signals: int, rng: random.Random) -> list[Event]:
    policy = default_policy()
    state = initial_state(account, "eu")
    events: list[Event] = []
    at = T0 + timedelta(seconds=rng.uniform(0, 3600))
    risky = rng.random() < 0.2
    for i in range(signals):
        at += timedelta(seconds=rng.expovariate(1 / 300))
        if i % 2 == 0:
            obs: RequestObserved | ScoreRecorded = RequestObserved(
                f"{account}-r{i}", "model-x", "proxy", 40, 300, 160, f"{i:064x}", False, "allow")
        else:
            jail = rng.uniform(0.4, 0.99) if risky and rng.random() < 0.2 else rng.uniform(0, 0.3)
            obs = ScoreRecorded(f"{account}-r{i - 1}", "prompt", f"{i:064x}", 160, "default",
                                "1", (("jailbreak", round(jail, 3)), ("cyber", 0.05)))
        new = decide(state, Signal(f"{account}-s{i}", account, "eu", at, "c", obs), policy, at)
        state = fold(state, new)
        events += new
    return events


async def run(url: str, args: argparse.Namespace
              ) -> tuple[BacktestReport, list[float], list[float]]:
    await migrate(url)
    rng = random.Random(11)
    t = time.perf_counter()
    stored = 0
    async with PostgresEventStore("eu", url, snapshot_every=1000) as store:
        batch: list[AppendRequest] = []
        for a in range(args.accounts):
            account = f"bt-{a:06d}"
            history = account_history(account, args.signals_per_account, rng)
            stored += len(history)
            batch.append(AppendRequest(account, 0, tuple(history)))
            if len(batch) == 50:
                await store.append_batch(batch)
                batch = []
        if batch:
            await store.append_batch(batch)
        print(f"stored {stored:,} events for {args.accounts:,} accounts in "
              f"{time.perf_counter() - t:.1f} s")
        candidate = parse_policy(re.sub(r'(?m)^version = ".*"$',
                                        'version = "candidate-heavier-jailbreak"',
                                        default_policy_text(), count=1)
                                 .replace("weight = 1.0", "weight = 1.5", 1))
        backtests: list[float] = []
        copies: list[float] = []
        report = await backtest_region(store, candidate)  # warm: caches, code paths
        for _ in range(args.runs):
            copies.append(await copy_out(url))
            report = await backtest_region(store, candidate)
            backtests.append(report.seconds)
        print(report.render(limit=5))
        return report, backtests, copies


async def copy_out(url: str) -> float:
    """Seconds for a raw ordered COPY-out of the region's events (the feed's columns)."""
    conn = await asyncpg.connect(url)
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    try:
        t = time.perf_counter()
        await conn.copy_from_query(COPY_FEED, output=sink, format="binary")
        return time.perf_counter() - t
    finally:
        await conn.close()


COPY_FEED = ("SELECT position, account_id, version, region, event_id, type, schema_version, "
             "occurred_at, causation_id, correlation_id, policy_version, body FROM events "
             "WHERE region = 'eu' ORDER BY position")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--signals-per-account", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with scratch_database() as url:
        report, backtests, copies = anyio.run(run, url, args)
    backtest_s, copy_s = statistics.median(backtests), statistics.median(copies)
    print(json.dumps({"events": report.events, "accounts": report.accounts,
                      "backtest_events_per_s": round(report.events / backtest_s),
                      "copy_rows_per_s": round(report.events / copy_s),
                      "ratio": round(copy_s / backtest_s, 3),
                      "runs_backtest_s": [round(x, 2) for x in backtests],
                      "runs_copy_s": [round(x, 2) for x in copies],
                      "differing_accounts": len(report.differing)}))


if __name__ == "__main__":
    main()
