"""Group-committed appends across many accounts vs a raw binary COPY of the same rows.

Both run in the same process against the same server, alternating for ``--repeat`` passes (the
best pass of each counts): the store's ``append_batch`` (inbox keys, version checks, feed
positions, snapshots every ``--snapshot-every`` events, one transaction per batch) and asyncpg's
``copy_records_to_table`` of exactly the event rows the store wrote, into a scratch copy of the
events table with the same indexes, in one COPY. Building the requests and the baseline's rows is
not timed; encoding the bodies inside the store is.

    python benchmarks/store_append.py [--accounts 2000] [--rounds 15] [--events-per-append 4]
                                      [--batch 1000]

Starts its own embedded PostgreSQL unless SAFEGUARDS_DATABASE_URL names a server (a fresh
database is created on it). A third pass per repeat runs the store with personal fields left in
the clear (``seal_personal=False``): ``sealed_vs_unsealed`` is what crypto-shredding's AES-GCM
and data keys cost the append (issue 14 asks >= 0.8). Last line: {"events_per_s",
"raw_copy_per_s", "ratio", "unsealed_events_per_s", "sealed_vs_unsealed"}
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

import anyio
import asyncpg

from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.chain_keys import chain_row, load_chain_key
from safeguards.adapters.store.pg_sql import EVENT_COLUMNS
from safeguards.adapters.store.validation import DEFAULT_SNAPSHOT_EVERY
from safeguards.core.backtest import strike_potential
from safeguards.core.chain import GENESIS, link
from safeguards.core.codec import pack_body
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.state import fold, initial_state

from synthetic import REGION, synthetic_event


def build_rounds(accounts: int, rounds: int, per_append: int) -> list[list[AppendRequest]]:
    """The appends, each carrying the writer's fold of its events (``state_after``), as the
    actors' appends do (decide_and_fold hands them the state for free)."""
    out = []
    states = {f"acct-{a:06d}": initial_state(f"acct-{a:06d}", REGION) for a in range(accounts)}
    for r in range(rounds):
        batch = []
        for a in range(accounts):
            account = f"acct-{a:06d}"
            expected = r * per_append
            events = tuple(
                synthetic_event(account, expected + i + 1, f"sig-{account}-{r}")
                for i in range(per_append)
            )
            states[account] = fold(states[account], events)
            batch.append(AppendRequest(account, expected, events, inbox_key=f"sig-{account}-{r}",
                                       state_after=states[account]))
        out.append(batch)
    return out


def baseline_rows(rounds: list[list[AppendRequest]]) -> list[tuple[Any, ...]]:
    """The rows the store writes, chain links included (computed here, untimed)."""
    rows = []
    position = 0
    key = load_chain_key(REGION)
    heads: dict[str, bytes] = {}
    for batch in rounds:
        for request in batch:
            for e in request.events:
                position += 1
                body = pack_body(e.body)
                chained = heads[e.account_id] = link(key, heads.get(e.account_id, GENESIS),
                                                     chain_row(e, body, None))
                rows.append((e.account_id, e.version, position, REGION, e.event_id, e.type,
                             e.schema_version, e.occurred_at, e.causation_id, e.correlation_id,
                             e.policy_version, body, strike_potential(e.body), chained))
    return rows


async def _store_pass(url: str, rounds: list[list[AppendRequest]], args: argparse.Namespace,
                      *, seal: bool = True) -> float:
    store = PostgresEventStore(REGION, url, snapshot_every=args.snapshot_every,
                               seal_personal=seal)
    try:
        start = time.perf_counter()
        for batch in rounds:
            for i in range(0, len(batch), args.batch):
                results = await store.append_batch(batch[i:i + args.batch])
                if not all(isinstance(r, AppendResult) and not r.duplicate for r in results):
                    raise RuntimeError("unexpected conflict or duplicate in the benchmark")
        return time.perf_counter() - start
    finally:
        await store.close()


async def run(url: str, args: argparse.Namespace) -> dict[str, float]:
    await migrate(url)
    rounds = build_rounds(args.accounts, args.rounds, args.events_per_append)
    total = sum(len(r.events) for batch in rounds for r in batch)
    rows = baseline_rows(rounds)
    groups, at = [], 0
    for batch in rounds:
        for i in range(0, len(batch), args.batch):
            n = sum(len(r.events) for r in batch[i:i + args.batch])
            groups.append(rows[at:at + n])
            at += n
    # The prebuilt requests and rows (hundreds of thousands of objects) are the harness's, not
    # the store's: keep the cyclic GC from walking them again and again during the passes.
    gc.collect()
    gc.freeze()
    conn = await asyncpg.connect(url)
    store_times: list[float] = []
    copy_times: list[float] = []
    grouped_times: list[float] = []
    plain_times: list[float] = []
    try:
        await conn.execute("CREATE TABLE events_copy (LIKE events INCLUDING ALL)")
        for rep in range(args.repeat):
            # The two alternate, so that a noisy neighbour on the machine hits both alike.
            await conn.execute("TRUNCATE events, snapshots, inbox, outbox, feed_counter, "
                               "account_keys, events_copy RESTART IDENTITY")
            await conn.execute("CHECKPOINT")
            store_s = await _store_pass(url, rounds, args)
            stored = await conn.fetchval("SELECT count(*) FROM events")
            snaps = await conn.fetchval("SELECT count(*) FROM snapshots")
            if stored != total:
                raise RuntimeError(f"store holds {stored} events, expected {total}")
            await conn.execute("CHECKPOINT")
            start = time.perf_counter()
            await conn.copy_records_to_table("events_copy", records=rows,
                                             columns=EVENT_COLUMNS, timeout=600)
            copy_s = time.perf_counter() - start
            # For reference, not the baseline: the same rows copied in the store's group sizes,
            # one transaction each, i.e. what batching alone costs.
            await conn.execute("TRUNCATE events_copy")
            await conn.execute("CHECKPOINT")
            start = time.perf_counter()
            for chunk in groups:
                async with conn.transaction():
                    await conn.copy_records_to_table("events_copy", records=chunk,
                                                     columns=EVENT_COLUMNS, timeout=600)
            grouped_times.append(time.perf_counter() - start)
            store_times.append(store_s)
            copy_times.append(copy_s)
            # The same appends with personal fields left in the clear (no data keys, no
            # AES-GCM): what sealing costs, measured in the same run.
            await conn.execute("TRUNCATE events, snapshots, inbox, outbox, feed_counter, "
                               "account_keys RESTART IDENTITY")
            await conn.execute("CHECKPOINT")
            plain_times.append(await _store_pass(url, rounds, args, seal=False))
            print(f"pass {rep + 1}: store {total / store_s:,.0f} events/s, "
                  f"raw COPY {total / copy_s:,.0f} events/s, ratio {copy_s / store_s:.2f}")
    finally:
        await conn.close()
    events_per_s = total / min(store_times)
    raw_per_s = total / min(copy_times)
    print(f"events: {total} ({args.accounts} accounts x {args.rounds} rounds x "
          f"{args.events_per_append} events, group commits of {args.batch} appends, "
          f"each with an inbox key; {snaps} snapshots written per pass)")
    print(f"store append_batch (best of {args.repeat}): {events_per_s:,.0f} events/s")
    print(f"raw COPY, one statement (best of {args.repeat}): {raw_per_s:,.0f} events/s")
    print(f"ratio: {events_per_s / raw_per_s:.2f}")
    plain_per_s = total / min(plain_times)
    print(f"store append_batch, personal fields in the clear (best of {args.repeat}): "
          f"{plain_per_s:,.0f} events/s; sealed/plain {events_per_s / plain_per_s:.2f}")
    print(f"(reference: raw COPY in the same {len(groups)} groups, a commit each: "
          f"{total / min(grouped_times):,.0f} events/s)")
    return {"events_per_s": round(events_per_s), "raw_copy_per_s": round(raw_per_s),
            "ratio": round(events_per_s / raw_per_s, 3),
            "unsealed_events_per_s": round(plain_per_s),
            "sealed_vs_unsealed": round(events_per_s / plain_per_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--events-per-append", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="appends per group commit")
    parser.add_argument("--snapshot-every", type=int, default=DEFAULT_SNAPSHOT_EVERY)
    parser.add_argument("--repeat", type=int, default=3, help="alternating passes; best counts")
    args = parser.parse_args()
    with scratch_database() as url:
        figures = anyio.run(run, url, args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
