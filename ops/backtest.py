"""``ops backtest``: a candidate policy against a region's stored histories.

One pass over the region's commit-ordered feed (pages of ``page`` events): each event goes to
its account's incremental replay (``core.backtest.AccountReplay``), so memory holds one state per
account, never whole histories, and the database serves a few large ordered reads instead of one
query per account. The report lists the accounts the candidate would have treated differently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from safeguards.core.backtest import AccountReplay, BacktestResult
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
                          since: datetime | None = None, page: int = 5000) -> BacktestReport:
    report = BacktestReport(store.region, candidate.version)
    started = time.perf_counter()
    replays: dict[str, AccountReplay] = {}
    position = 0
    while True:
        entries = await store.read_feed(position, page)
        if not entries:
            break
        for entry in entries:
            e = entry.event
            replay = replays.get(e.account_id)
            if replay is None:
                replay = replays[e.account_id] = AccountReplay(e.account_id, e.region,
                                                               candidate, since)
            replay.add(e)
        position = entries[-1].position
    for account in sorted(replays):
        result = replays[account].result()
        if result.events_replayed == 0:
            continue  # nothing since ``since``
        report.accounts += 1
        report.events += result.events_replayed
        if result.differs:
            report.differing.append(result)
    report.seconds = time.perf_counter() - started
    return report
