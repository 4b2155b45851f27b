"""``ops backtest``: a candidate policy against a region's stored histories.

First one grouped read of every account's highest strike potential (``core.backtest``): an
account whose every event stays below the candidate's lowest strike score, with nothing decided
and no operator action in its history, cannot be treated differently, and is counted without a
replay. Then passes over the region's commit-ordered feed for the rest (pages of ``page``
events, filtered to those accounts by the database): each event goes to its account's
incremental replay (``core.backtest.AccountReplay``), so memory holds one state per account,
never whole histories. The report lists the accounts the candidate would have treated
differently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from safeguards.core.backtest import AccountReplay, BacktestResult, replay_floor
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
    skipped_accounts: int = 0  # below the candidate's lowest strike score: the same, unreplayed
    replayed_events: int = 0
    linked_accounts: int = 0  # replayed accounts the candidate links to an aggregate
    linked_starts: int = 0  # of them, those a linked aggregate's enforcement raised

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def render(self, limit: int = 50) -> str:
        lines = [
            f"backtest of policy {self.candidate_version} over region {self.region}: "
            f"{self.accounts} accounts, {self.events} events in {self.seconds:.2f} s "
            f"({self.events_per_s:,.0f} events/s; {self.skipped_accounts} accounts below its "
            f"lowest strike score counted unreplayed, {self.replayed_events} events replayed)",
            f"{len(self.differing)} account(s) would have been treated differently",
            f"links: {self.linked_accounts} account(s) linked to an organisation, API key or "
            f"prompt; {self.linked_starts} started at the linked level by an enforced one "
            "(rule link.enforced)",
        ]
        for r in self.differing[:limit]:
            lines.append(f"  {r.account_id}: {r.describe()}")
            if r.links_line():
                lines.append(f"    {r.links_line()}")
        if len(self.differing) > limit:
            lines.append(f"  ... and {len(self.differing) - limit} more")
        return "\n".join(lines)


def _count(report: BacktestReport, replay: AccountReplay) -> None:
    result = replay.result()
    if result.events_replayed == 0:
        return  # nothing since ``since``
    report.accounts += 1
    report.events += result.events_replayed
    report.replayed_events += result.events_replayed
    report.linked_accounts += bool(result.candidate.links)
    report.linked_starts += bool(result.candidate.linked_starts)
    if result.differs:
        report.differing.append(result)


async def _replay_feed(store: EventStore, candidate: Policy, since: datetime | None, page: int,
                       wanted: set[str], report: BacktestReport) -> None:
    """Most accounts need a replay: one pass over the whole commit-ordered feed."""
    replays: dict[str, AccountReplay] = {}
    position = 0
    while True:
        entries = await store.read_feed(position, page)
        if not entries:
            break
        for entry in entries:
            e = entry.event
            account_replay = replays.get(e.account_id)
            if account_replay is None:
                if e.account_id not in wanted:
                    continue  # counted without a replay
                account_replay = replays[e.account_id] = AccountReplay(
                    e.account_id, e.region, candidate, since)
            account_replay.add(e)
        position = entries[-1].position
    for account in sorted(replays):
        _count(report, replays[account])


async def backtest_region(store: EventStore, candidate: Policy, *,
                          since: datetime | None = None, page: int = 5000,
                          accounts_per_read: int = 200) -> BacktestReport:
    report = BacktestReport(store.region, candidate.version)
    started = time.perf_counter()
    # Accounts whose every event stays below the candidate's lowest strike score, with nothing
    # decided and no operator action, are treated the same by it: counted, not replayed.
    floor = replay_floor(candidate)
    risks = await store.account_risks(since)
    replay = [r.account_id for r in risks if r.strike_potential >= floor]
    for r in risks:
        if r.strike_potential < floor and r.events_since:
            report.accounts += 1
            report.events += r.events_since
            report.skipped_accounts += 1
    if len(replay) * 2 > len(risks):
        await _replay_feed(store, candidate, since, page, set(replay), report)
    else:
        for i in range(0, len(replay), accounts_per_read):
            histories = await store.histories(replay[i:i + accounts_per_read])
            for account, history in histories.items():
                account_replay = AccountReplay(account, store.region, candidate, since)
                for e in history:
                    account_replay.add(e)
                _count(report, account_replay)
    report.differing.sort(key=lambda r: r.account_id)
    report.seconds = time.perf_counter() - started
    return report
