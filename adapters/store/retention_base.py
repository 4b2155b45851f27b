"""Retention bases: the snapshot at an account's retention anchor, which stands for the events
retention removed (``event_retention.py``).

The rule. Snapshots are a cache, rebuilt from events whenever another fold made them, except a
retention base: its events are gone, so it is the history's first fact and is never discarded
for its fold version. Reads use it where the events stop short of the state asked for:

- a base this fold made is read as it is; one an earlier fold made is carried to this fold by
  the snapshot upcasters (``core.upcasters.STATE_UPCASTERS``, through ``codec.carry_state``);
- a base none of them carries (a fold change without an upcaster, a newer node's fold during a
  rolling deploy) or a missing one raises ``RetentionBaseUnreadable``, a ``CodecError``: the
  node quarantines the account and raises the alarm (``actors/quarantine.py``). Its kept events
  alone are never folded as if they were its whole history;
- a state before the base cannot be asked for (``VersionGap``), never answered with a wrong one;
- readers that replay or explain stored events (``ops backtest``, ``ops explain``, ``ops rca``,
  the console) start from it (``retention_bases``, ``base_state``), never from its kept events
  alone.

``ops retention`` first carries every base of an earlier fold to this fold (a snapshot of this
fold at the same version; the original stays beside it), so loads read it directly and later
truncations start from it, and reports the bases it cannot carry (``--dry-run``: counts what it
would carry). Retention truncates no further an account whose base is unreadable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeguards.adapters.store.memory import InMemoryEventStore
from safeguards.adapters.store.pg_sql import NO_LIMIT
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.errors import RetentionBaseUnreadable, VersionGap
from safeguards.core.events import Event
from safeguards.core.state import AccountState

log = logging.getLogger(__name__)

# Each anchored account's base version and the snapshots stored there (any fold), newest fold
# first; $1: the accounts (NULL: every anchored account).
BASES = """
SELECT a.account_id, a.retained_from - 1, s.fold_version, s.state, a.truncated_at
  FROM event_anchors a
  LEFT JOIN snapshots s ON s.account_id = a.account_id AND s.version = a.retained_from - 1
 WHERE $1::text[] IS NULL OR a.account_id = ANY($1::text[])
 ORDER BY a.account_id, s.fold_version DESC NULLS LAST
"""
KEEP_CARRIED = ("INSERT INTO snapshots (account_id, version, fold_version, state) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")


@dataclass(frozen=True, slots=True)
class Base:
    account_id: str
    version: int  # the last removed version: the base is the state there
    folds: tuple[int, ...]  # the folds of the snapshots stored at it, newest first
    state: AccountState | None  # carried to this fold; None: none of them can be
    removed_at: datetime | None = None  # when retention last truncated the history

    @property
    def of_this_fold(self) -> bool:
        return fold_module.FOLD_VERSION in self.folds

    def readable(self) -> AccountState:
        if self.state is None:
            raise RetentionBaseUnreadable(
                f"account {self.account_id!r}: its retention base at version {self.version} "
                f"was made by fold {list(self.folds) or 'none'}, which this build (fold "
                f"{fold_module.FOLD_VERSION}) cannot carry; add a snapshot upcaster "
                "(core.upcasters.STATE_UPCASTERS)")
        return self.state


async def read_bases(driver: Any, accounts: Sequence[str] | None,
                     timeout_s: float) -> dict[str, Base]:
    """The retention bases of ``accounts`` that have one (None: of every anchored account)."""
    rows: dict[str, list[Any]] = {}
    versions: dict[str, int] = {}
    removed_at: dict[str, datetime] = {}
    for account, version, fold, data, truncated_at in await driver.fetch(
            BASES, None if accounts is None else list(accounts), timeout=timeout_s):
        versions[account] = int(version)
        removed_at[account] = truncated_at
        found = rows.setdefault(account, [])
        if fold is not None:
            found.append((int(fold), bytes(data)))
    bases: dict[str, Base] = {}
    for account, stored in rows.items():
        state = None
        for _fold, data in stored:  # the newest fold that carries, this fold's first
            state = codec.carry_state(data)
            if state is not None:
                break
        if state is not None and (state.version != versions[account]
                                  or state.account_id != account):
            state = None  # not the state it claims to be: unreadable, not trusted
        bases[account] = Base(account, versions[account], tuple(f for f, _ in stored), state,
                              removed_at[account])
    return bases


async def retention_bases(store: Any, accounts: Sequence[str] | None) -> dict[str, Base]:
    """The retention bases in ``store`` of ``accounts`` (None: of every truncated history), for
    the readers that replay stored events (backtests, explanations); none in a store that never
    truncates (the in-memory twin)."""
    if isinstance(store, InMemoryEventStore):
        return {}
    async with store._connect() as conn:
        return await read_bases(await store._driver(conn), accounts, store._timeout)


async def base_state(store: Any, account_id: str) -> AccountState | None:
    """``account_id``'s retention base carried to this fold (None: its history was never
    truncated); ``RetentionBaseUnreadable`` where this build cannot carry it."""
    base = (await retention_bases(store, [account_id])).get(account_id)
    return None if base is None else base.readable()


def needs_base(state: AccountState, tail: Sequence[Event], hi: int) -> bool:
    """Whether the events after ``state`` stop short of it: the first is not the next version
    (retention removed those between), or, for a state asked for at a version ``hi`` (not
    ``NO_LIMIT``: the newest), there are none although ``state`` is below it (they may have
    been removed). The common case, a tail that continues its state, costs no statement."""
    if tail:
        return tail[0].version != state.version + 1
    return state.version < hi < NO_LIMIT


async def rebase(driver: Any, states: dict[str, AccountState], tails: dict[str, list[Event]],
                 his: dict[str, int], timeout_s: float) -> None:
    """For each account whose events stop short of its state (``needs_base``), the state its
    tail folds from becomes its retention base, carried to this fold; raises
    ``RetentionBaseUnreadable`` where that cannot be read, ``VersionGap`` for a state asked for
    before it. Accounts that need none are left as they are (one statement, only when some do).
    """
    short = [a for a in states if needs_base(states[a], tails[a], his[a])]
    if not short:
        return
    bases = await read_bases(driver, short, timeout_s)
    for account in short:
        base, tail, current = bases.get(account), tails[account], states[account]
        if base is None or base.version <= current.version:
            if tail:  # a hole retention did not make
                raise RetentionBaseUnreadable(
                    f"account {account!r}: its events jump from version {current.version} to "
                    f"{tail[0].version} and no retention base stands for those between")
            continue  # asked past its newest event, or for an account with none
        if base.version > his[account]:
            raise VersionGap(f"account {account!r}: version {his[account]} precedes its "
                             f"retention base at {base.version}; those events are gone")
        state = base.readable()
        if tail and tail[0].version != base.version + 1:
            raise RetentionBaseUnreadable(
                f"account {account!r}: its retention base at version {base.version} does not "
                f"meet its first kept event at {tail[0].version}")
        states[account] = state


async def carry_bases(store: Any, *, dry_run: bool) -> dict[str, Any]:
    """``ops retention``'s first step, in ``store`` (a ``PostgresEventStore``), in one
    transaction: every base of an earlier fold carried to this fold (with ``dry_run``: counted).
    Returns ``other_fold`` (bases with no snapshot of this fold), ``unreadable`` and
    ``unreadable_accounts`` (bases this build cannot carry) and, unless ``dry_run``,
    ``carried``."""
    async with store._connect() as conn, conn.begin():
        return await _carry(await store._driver(conn), store._timeout, dry_run)


async def _carry(driver: Any, timeout_s: float, dry_run: bool) -> dict[str, Any]:
    bases = await read_bases(driver, None, timeout_s)
    other = [b for b in bases.values() if not b.of_this_fold]
    unreadable = sorted(b.account_id for b in bases.values() if b.state is None)
    report: dict[str, Any] = {"other_fold": len(other), "unreadable": len(unreadable),
                              "unreadable_accounts": unreadable}
    if unreadable:
        log.error("ALARM %d truncated histories have a retention base this build (fold %d) "
                  "cannot carry: those accounts are quarantined where they are loaded, and "
                  "truncated no further", len(unreadable), fold_module.FOLD_VERSION)
    if dry_run:
        return report
    carried = 0
    for base in other:
        if base.state is not None:
            await driver.execute(KEEP_CARRIED, base.account_id, base.version,
                                 fold_module.FOLD_VERSION, codec.encode_state(base.state),
                                 timeout=timeout_s)
            carried += 1
    report["carried"] = carried
    return report
