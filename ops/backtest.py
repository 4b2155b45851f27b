"""``ops backtest``: a candidate policy against a region's stored histories.

First one grouped read of every account's highest strike potential (``core.backtest``): an
account whose every event stays below the candidate's lowest strike score, with nothing decided
and no operator action in its history, cannot be treated differently, and is counted without a
replay. Then passes over the region's commit-ordered feed for the rest (pages of ``page``
events, filtered to those accounts by the database): each event goes to its account's
incremental replay (``core.backtest.AccountReplay``), so memory holds one state per account,
never whole histories. The report lists the accounts the candidate would have treated
differently.

A history retention truncated is replayed from its retention base (the state at the last
version retention removed, ``adapters/store/retention_base.py``), never as if its kept events
were all of it: the observations before the base are gone, so both trajectories start at the
base and only decisions after it are compared; the report lists where each starts. An account
whose base this build cannot read, or whose events retention removed while the backtest read
them, is not replayed and is listed (``not_replayed``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from safeguards.adapters.store.retention_base import Base, retention_bases
from safeguards.core.backtest import AccountReplay, BacktestResult, replay_floor
from safeguards.core.errors import VersionGap
from safeguards.core.events import Event
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore

BASES_PER_READ = 5000  # accounts whose retention bases one statement reads


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
    based_accounts: int = 0  # replayed accounts whose history starts at a retention base
    # accounts with a retention base this build cannot read, or truncated while being read
    not_replayed: list[str] = field(default_factory=list)

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
            f"retention: {self.based_accounts} account(s) replayed from their retention base "
            "(truncated histories: only decisions after it are compared)",
        ]
        if self.not_replayed:
            lines.append(f"NOT REPLAYED: {len(self.not_replayed)} account(s) whose retention "
                         "base this build cannot read (see ops retention), or that retention "
                         "truncated during the backtest: "
                         + ", ".join(self.not_replayed[:limit]))
        for r in self.differing[:limit]:
            based = (f" (from its retention base at v{r.base_version}; v1..v{r.base_version} "
                     "removed by retention)") if r.base_version else ""
            lines.append(f"  {r.account_id}: {r.describe()}{based}")
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
    report.based_accounts += bool(result.base_version)
    if result.differs:
        report.differing.append(result)


def _added(replay: AccountReplay, e: Event, report: BacktestReport) -> bool:
    """``e`` replayed; False where it does not follow the one before (retention removed events
    between two reads): the account is listed as not replayed."""
    try:
        replay.add(e)
    except VersionGap:
        report.not_replayed.append(replay.account_id)
        return False
    return True


class _Starts:
    """Where each replayed account's replay starts: its retention base's state, or v1."""

    def __init__(self, store: EventStore, bases: dict[str, Base], report: BacktestReport) -> None:
        self._store, self._bases, self._report = store, bases, report

    async def replay(self, first: Event, candidate: Policy,
                     since: datetime | None) -> AccountReplay | None:
        """The replay of ``first``'s account, or None where none can be (listed in the report):
        its base cannot be read, or its first event does not follow on from it."""
        account = first.account_id
        base = self._bases.get(account)
        if (0 if base is None else base.version) + 1 != first.version:
            # retention truncated it after the bases were read: read its base again
            base = (await retention_bases(self._store, [account])).get(account)
        if base is None and first.version == 1:
            return AccountReplay(account, first.region, candidate, since)
        if base is not None and base.state is not None and base.version + 1 == first.version:
            return AccountReplay(account, first.region, candidate, since, base.state)
        self._report.not_replayed.append(account)
        return None


async def _replay_feed(store: EventStore, candidate: Policy, since: datetime | None, page: int,
                       wanted: set[str], starts: _Starts, report: BacktestReport) -> None:
    """Most accounts need a replay: one pass over the whole commit-ordered feed."""
    replays: dict[str, AccountReplay | None] = {}
    position = 0
    while True:
        entries = await store.read_feed(position, page)
        if not entries:
            break
        for entry in entries:
            e = entry.event
            if e.account_id in replays:
                account_replay = replays[e.account_id]
            elif e.account_id not in wanted:
                continue  # counted without a replay
            else:
                account_replay = replays[e.account_id] = await starts.replay(e, candidate, since)
            if account_replay is not None and not _added(account_replay, e, report):
                replays[e.account_id] = None
        position = entries[-1].position
    for account in sorted(replays):
        replayed = replays[account]
        if replayed is not None:
            _count(report, replayed)


def _decided(base: Base) -> bool:
    """Whether a retention base holds anything a policy decided (a level, strikes, risk,
    links, an open review or appeal), or cannot be read: its account goes to a replay whatever
    its kept events are (one that cannot be read is listed there, not counted as the same)."""
    s = base.state
    return s is None or bool(s.level or s.strikes or s.risk or s.links or s.review_level
                             or s.open_appeals)


async def backtest_region(store: EventStore, candidate: Policy, *,
                          since: datetime | None = None, page: int = 5000,
                          accounts_per_read: int = 200) -> BacktestReport:
    report = BacktestReport(store.region, candidate.version)
    started = time.perf_counter()
    # Accounts whose every event stays below the candidate's lowest strike score, with nothing
    # decided and no operator action (kept, or in a retention base), are treated the same by
    # it: counted, not replayed.
    floor = replay_floor(candidate)
    risks = await store.account_risks(since)
    replay: list[str] = []
    bases: dict[str, Base] = {}  # of the replayed accounts: memory holds no others
    for i in range(0, len(risks), BASES_PER_READ):
        some = risks[i:i + BASES_PER_READ]
        found = await retention_bases(store, [r.account_id for r in some])
        for r in some:
            base = found.get(r.account_id)
            if r.strike_potential >= floor or (base is not None and _decided(base)):
                replay.append(r.account_id)
                if base is not None:
                    bases[r.account_id] = base
    chosen = set(replay)
    for r in risks:
        if r.account_id not in chosen and r.events_since:
            report.accounts += 1
            report.events += r.events_since
            report.skipped_accounts += 1
    starts = _Starts(store, bases, report)
    if len(replay) * 2 > len(risks):
        await _replay_feed(store, candidate, since, page, chosen, starts, report)
    else:
        for i in range(0, len(replay), accounts_per_read):
            histories = await store.histories(replay[i:i + accounts_per_read])
            for history in histories.values():
                account_replay = await starts.replay(history[0], candidate, since)
                if account_replay is not None and all(
                        _added(account_replay, e, report) for e in history):
                    _count(report, account_replay)
    report.differing.sort(key=lambda r: r.account_id)
    report.not_replayed.sort()
    report.seconds = time.perf_counter() - started
    return report
