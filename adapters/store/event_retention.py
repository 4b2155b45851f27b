"""Retention of events: an account's oldest events go once they are older than the region's
TTL, and its history then starts at an anchor (migration 0009).

For each account whose oldest events are past the cutoff, in one transaction under the feed lock
(no append runs meanwhile):

1. the state those events fold to is written as a snapshot at the last version that goes
   (*snapshot before truncation*: the fold stays correct; snapshots at an anchor are never
   purged, ``retention.py``);
2. the anchor row is written or moved forward: the first kept version, the chain link of the
   last removed event, how many were removed in all, when, and a MAC over them under the
   region's chain key (``core.chain.anchor_mac``), so ``ops verify`` checks the kept events
   from the anchor on and refuses an anchor someone without the key wrote;
3. the events before the anchor are deleted (the trigger lets only that through, and only in a
   transaction that asked for it).

What stays: every account's newest event (the next append continues its version and chain
link), every event newer than the cutoff, and anything at or after the first event that is not
older than the cutoff (times are not strictly ordered by version; a history is never holed).

What changes: ``history`` and explanations start at the anchor; a state before it can no longer
be asked for (``state_at`` an earlier version, or a time before the first kept event, fails with
a version gap, never a wrong state); backtests replay the kept events from the base.

Across fold-version changes: the snapshot at the anchor is the account's *retention base*, never
discarded for its fold but carried to the current fold by the snapshot upcasters
(``retention_base.py`` has the rule). An account whose base this build cannot carry is refused
here (counted as ``refused``, with an alarm): its state at the new anchor cannot be computed,
and it is never truncated further from its kept events alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safeguards.adapters.store.retention_base import read_bases
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.chain import GENESIS, ChainAnchor, anchor_mac
from safeguards.core.errors import InvalidInput, RetentionBaseUnreadable
from safeguards.core.state import AccountState

log = logging.getLogger(__name__)

MIN_EVENT_TTL_S = 30 * 86400.0  # appeals, reviews and RCAs need a month of history at least

# Per account: the last version that may go (everything up to it older than the cutoff, and not
# its newest event), and its first stored version.
CANDIDATES = """
SELECT account_id, first, least(coalesce(fresh, newest + 1) - 1, newest - 1) AS through
  FROM (SELECT account_id, min(version) AS first, max(version) AS newest,
               min(version) FILTER (WHERE occurred_at >= $1) AS fresh
          FROM events GROUP BY account_id) per_account
 WHERE least(coalesce(fresh, newest + 1) - 1, newest - 1) >= first
 ORDER BY account_id
"""
ANCHOR = ("SELECT retained_from, previous_chain, events_removed, truncated_at, mac "
          "FROM event_anchors WHERE account_id = $1")
LINK_AT = "SELECT chain_hash FROM events WHERE account_id = $1 AND version = $2"
SNAPSHOT = ("INSERT INTO snapshots (account_id, version, fold_version, state) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
UPSERT_ANCHOR = """
INSERT INTO event_anchors (account_id, retained_from, previous_chain, events_removed,
                           truncated_at, mac)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id) DO UPDATE
   SET retained_from = excluded.retained_from, previous_chain = excluded.previous_chain,
       events_removed = excluded.events_removed, truncated_at = excluded.truncated_at,
       mac = excluded.mac
"""
ASK_TO_TRUNCATE = "SELECT set_config('safeguards.truncating', 'on', true)"
TRUNCATE = ("WITH gone AS (DELETE FROM events WHERE account_id = $1 AND version < $2 "
            "RETURNING 1) SELECT count(*) FROM gone")


@dataclass(frozen=True, slots=True)
class EventRetention:
    ttl_s: float

    def __post_init__(self) -> None:
        if not self.ttl_s >= MIN_EVENT_TTL_S:
            raise InvalidInput(f"event TTL {self.ttl_s:g} s is below its floor of "
                               f"{MIN_EVENT_TTL_S:g} s")


@dataclass(frozen=True, slots=True)
class Candidate:
    account_id: str
    first: int  # its first stored version
    through: int  # the last version that goes

    @property
    def events(self) -> int:
        return self.through - self.first + 1


async def candidates(driver: Any, policy: EventRetention, now: datetime,
                     timeout_s: float) -> list[Candidate]:
    rows = await driver.fetch(CANDIDATES, now - timedelta(seconds=policy.ttl_s),
                              timeout=timeout_s)
    return [Candidate(r[0], int(r[1]), int(r[2])) for r in rows]


async def read_anchor(driver: Any, account_id: str, timeout_s: float) -> ChainAnchor | None:
    row = await driver.fetchrow(ANCHOR, account_id, timeout=timeout_s)
    if row is None:
        return None
    return ChainAnchor(account_id, int(row[0]), bytes(row[1]), int(row[2]), row[3], bytes(row[4]))


async def truncate_one(driver: Any, candidate: Candidate, state: AccountState, chain_key: bytes,
                       now: datetime, timeout_s: float) -> int:
    """Steps 1-3 for one account inside the caller's transaction (which holds the feed lock);
    ``state``: its state at ``candidate.through``. Events removed."""
    if state.version != candidate.through:
        raise InvalidInput(f"state at version {state.version}, expected {candidate.through}")
    account, through = candidate.account_id, candidate.through
    await driver.execute(SNAPSHOT, account, through, fold_module.FOLD_VERSION,
                         codec.encode_state(state), timeout=timeout_s)
    link = await driver.fetchval(LINK_AT, account, through, timeout=timeout_s)
    previous = GENESIS if link is None else bytes(link)
    before = await read_anchor(driver, account, timeout_s)
    removed = candidate.events + (0 if before is None else before.events_removed)
    mac = anchor_mac(chain_key, account, through + 1, previous, removed, now)
    await driver.execute(UPSERT_ANCHOR, account, through + 1, previous, removed, now, mac,
                         timeout=timeout_s)
    await driver.fetchval(ASK_TO_TRUNCATE, timeout=timeout_s)
    return int(await driver.fetchval(TRUNCATE, account, through + 1, timeout=timeout_s))


async def truncate_events(store: Any, policy: EventRetention, now: datetime, *,
                          dry_run: bool = False) -> dict[str, int]:
    """Truncate every account's events past ``policy``'s TTL in ``store`` (a
    ``PostgresEventStore``), one transaction per account; with ``dry_run`` only count. Returns
    ``{"events": removed, "accounts": truncated, "refused": accounts whose retention base this
    build cannot read}`` (or what would be)."""
    from safeguards.adapters.store import pg_sql as sql

    timeout = store._timeout
    async with store._connect() as conn:
        driver = await store._driver(conn)
        found = await candidates(driver, policy, now, timeout)
        bases = await read_bases(driver, [c.account_id for c in found], timeout)
    unreadable = {a for a, base in bases.items() if base.state is None}
    if dry_run:
        kept = [c for c in found if c.account_id not in unreadable]
        return {"events": sum(c.events for c in kept), "accounts": len(kept),
                "refused": len(found) - len(kept)}
    removed = truncated = refused = 0
    for candidate in found:
        try:
            async with store._connect() as conn, conn.begin():
                # the feed lock, as every append takes it: none runs until this commits
                await conn.execute(sql.LOCK_FEED, {"region": store.region})
                driver = await store._driver(conn)
                state = (await store._states(conn, {candidate.account_id: candidate.through}))[
                    candidate.account_id]
                removed += await truncate_one(driver, candidate, state, store._chain_key, now,
                                              timeout)
        except RetentionBaseUnreadable:  # rolled back: nothing of it changed
            refused += 1
            continue
        truncated += 1
    if refused:
        log.error("ALARM event retention refused %d accounts: their retention base was made "
                  "by a fold this build cannot carry", refused)
    return {"events": removed, "accounts": truncated, "refused": refused}


async def chain_anchor(store: Any, account_id: str) -> ChainAnchor | None:
    """Where ``account_id``'s history in ``store`` starts (None: at version 1)."""
    async with store._connect() as conn:
        return await read_anchor(await store._driver(conn), account_id, store._timeout)
