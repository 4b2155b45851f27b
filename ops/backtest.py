"""``ops backtest``: a candidate policy against a region's stored histories.

Reads every account with events since ``since`` from the region's store (a few accounts at a
time, concurrently), replays each history's observations through the candidate with the pure
``core.backtest``, and reports which accounts would have been treated differently, and how.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from safeguards.core.backtest import BacktestResult, backtest
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore


@dataclass(slots=True)
class BacktestReport:
    region: str
    candidate_version: str
    accounts: int = 0
    events: int = 0
    seconds: float = 0.0
    differing: list[BacktestResult] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def render(self, limit: int = 50) -> str:
        lines = [
            f"backtest of policy {self.candidate_version} over region {self.region}: "
            f"{self.accounts} accounts, {self.events} events in {self.seconds:.2f} s "
            f"({self.events_per_s:,.0f} events/s)",
            f"{len(self.differing)} account(s) would have been treated differently",
        ]
        for r in self.differing[:limit]:
            lines.append(f"  {r.account_id}: {r.describe()}")
        if len(self.differing) > limit:
            lines.append(f"  ... and {len(self.differing) - limit} more")
        return "\n".join(lines)


async def backtest_region(store: EventStore, candidate: Policy, *,
                          since: datetime | None = None, concurrency: int = 4,
                          page: int = 500) -> BacktestReport:
    report = BacktestReport(store.region, candidate.version)
    started = time.perf_counter()
    send, receive = anyio.create_memory_object_stream[str](page)

    async def producer() -> None:
        async with send:
            after: str | None = None
            while True:
                ids = await store.account_ids(after=after, limit=page)
                if not ids:
                    return
                for account in ids:
                    await send.send(account)
                after = ids[-1]

    async def worker(accounts: MemoryObjectReceiveStream[str]) -> None:
        async with accounts:
            async for account in accounts:
                await replay(account)

    async def replay(account: str) -> None:
        history = await store.history(account)
        if not history or (since is not None and history[-1].occurred_at < since):
            return
        result = backtest(history, candidate, since)
        report.accounts += 1
        report.events += len(history)
        if result.differs:
            report.differing.append(result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        with receive:  # each worker holds its own clone; the original closes here
            for _ in range(concurrency):
                tg.start_soon(worker, receive.clone())
    report.differing.sort(key=lambda r: r.account_id)
    report.seconds = time.perf_counter() - started
    return report
