"""Load time of a 100k-event account (with snapshots) vs a 10-event account.

The big account holds 100,000 + ``snapshot_every`` - 1 events, so that its newest snapshot (at
100,000) leaves the longest tail a load ever folds (31 events with the store's default of 32).
The small account holds 10 events and no snapshot. Loads alternate between the two (median of
``--repeat`` each, after a warm-up), through ``PostgresEventStore.load``.

    python benchmarks/load.py [--repeat 300] [--snapshot-every 32]

Starts its own embedded PostgreSQL unless SAFEGUARDS_DATABASE_URL names a server (a fresh
database is created on it). Last line: {"load_100k_ms", "load_10_ms", "ratio"}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import anyio

from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.validation import DEFAULT_SNAPSHOT_EVERY
from safeguards.core.events import (
    Event,
)
from safeguards.core.ports import AppendRequest
from safeguards.core.state import fold, initial_state

from synthetic import REGION, synthetic_event

SMALL = 10


def events(account: str, first: int, count: int) -> tuple[Event, ...]:
    return tuple(synthetic_event(account, v, f"sig-{v}") for v in range(first, first + count))


async def fill(store: PostgresEventStore, account: str, total: int, chunk: int) -> None:
    version = 0
    while version < total:
        n = min(chunk, total - version)
        await store.append(AppendRequest(account, version, events(account, version + 1, n)))
        version += n


async def timed_load(store: PostgresEventStore, account: str) -> float:
    start = time.perf_counter()
    await store.load(account)
    return (time.perf_counter() - start) * 1000


async def run(url: str, args: argparse.Namespace) -> dict[str, float]:
    await migrate(url)
    tail = args.snapshot_every - 1
    big_total = 100_000 + tail
    async with PostgresEventStore(REGION, url, snapshot_every=args.snapshot_every) as store:
        await fill(store, "big", 100_000, 10_000)
        await fill_tail(store, "big", 100_000, tail)
        await fill(store, "small", SMALL, SMALL)
        snaps = await store.snapshot_versions("big")
        big = await store.load("big")
        if big != fold(initial_state("big", REGION), await store.history("big")):
            raise RuntimeError("load disagrees with a full fold")
        for _ in range(20):
            await store.load("big")
            await store.load("small")
        big_ms, small_ms = [], []
        for _ in range(args.repeat):
            big_ms.append(await timed_load(store, "big"))
            small_ms.append(await timed_load(store, "small"))
    load_big = statistics.median(big_ms)
    load_small = statistics.median(small_ms)
    print(f"big account: {big_total} events, newest snapshot at {snaps[-1]} "
          f"(tail {big_total - snaps[-1]}); small account: {SMALL} events, no snapshot")
    print(f"load big   (median of {args.repeat}): {load_big:.3f} ms")
    print(f"load small (median of {args.repeat}): {load_small:.3f} ms")
    print(f"ratio: {load_big / load_small:.2f}")
    return {"load_100k_ms": round(load_big, 3), "load_10_ms": round(load_small, 3),
            "ratio": round(load_big / load_small, 3)}


async def fill_tail(store: PostgresEventStore, account: str, version: int, count: int) -> None:
    """Single-event appends, the way an actor writes (no snapshot until the next boundary)."""
    for v in range(version, version + count):
        await store.append(AppendRequest(account, v, events(account, v + 1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--snapshot-every", type=int, default=DEFAULT_SNAPSHOT_EVERY)
    args = parser.parse_args()
    with scratch_database() as url:
        figures = anyio.run(run, url, args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
