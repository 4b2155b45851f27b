"""Retention of what a region's store keeps besides its events: idempotency keys, published
enforcement messages and superseded snapshots, each past its time-to-live.

What may go, and what must stay so that nothing else changes:
- **inbox** keys older than their TTL. The TTL may not be shorter than ``MIN_INBOX_TTL_S``: a
  signal can be redelivered (or replayed) for as long as the inputs stream keeps it (7 days), and
  a key deleted before that would let a redelivered signal be decided twice.
- **outbox** rows published longer ago than their TTL, except each subject's newest row (the
  relay's repair compares an account's newest command with the enforcement stream). Rows not yet
  published are never touched.
- **snapshots** older than their TTL that are not an account's newest for the current fold, and
  every snapshot another fold version wrote (never read: states are rebuilt from events). Events
  stay, so every state can still be folded: dropping a snapshot costs a longer fold, never a
  different state.

Events are truncated by ``event_retention.py`` (an anchor keeps the chain verifiable). The
snapshots at each anchor, of whatever fold, are the account's retention base: they stand for
the removed events and are never purged here (``retention_base.py`` carries them across fold
changes).
Dead letters expire in their stream (``StreamSettings.dlq_max_age_s``, 14 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from safeguards.core import state as fold_module
from safeguards.core.errors import InvalidInput

MIN_INBOX_TTL_S = 8 * 86400.0  # the inputs stream's 7 days of redelivery and replay, plus a day
MIN_OUTBOX_TTL_S = 3600.0
MIN_SNAPSHOT_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    inbox_ttl_s: float = 30 * 86400.0
    outbox_ttl_s: float = 7 * 86400.0
    snapshot_ttl_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        for ttl, floor, what in ((self.inbox_ttl_s, MIN_INBOX_TTL_S, "inbox"),
                                 (self.outbox_ttl_s, MIN_OUTBOX_TTL_S, "outbox"),
                                 (self.snapshot_ttl_s, MIN_SNAPSHOT_TTL_S, "snapshot")):
            if not ttl >= floor:
                raise InvalidInput(f"{what} TTL {ttl:g} s is below its floor of {floor:g} s")


# (what, the rows it removes): each statement takes the cutoff time ($1) and, for snapshots,
# the current fold version ($2).
_STATEMENTS = {
    "inbox": "FROM inbox WHERE recorded_at < $1",
    "outbox": ("FROM outbox o WHERE o.published_at IS NOT NULL AND o.published_at < $1 "
               "AND EXISTS (SELECT 1 FROM outbox n WHERE n.subject = o.subject AND n.id > o.id)"),
    "snapshots": ("FROM snapshots s WHERE (s.fold_version <> $2 OR (s.created_at < $1 AND EXISTS "
                  "(SELECT 1 FROM snapshots n WHERE n.account_id = s.account_id "
                  "AND n.fold_version = s.fold_version AND n.version > s.version))) "
                  # the state at an anchor stands for the truncated events: never purged
                  "AND NOT EXISTS (SELECT 1 FROM event_anchors a WHERE a.account_id = "
                  "s.account_id AND a.retained_from = s.version + 1)"),
}


async def purge(driver: Any, policy: RetentionPolicy, now: datetime, *, dry_run: bool,
                statement_timeout_s: float) -> dict[str, int]:
    """Rows removed (or, with ``dry_run``, that would be) per table, in one transaction."""
    ttl = {"inbox": policy.inbox_ttl_s, "outbox": policy.outbox_ttl_s,
           "snapshots": policy.snapshot_ttl_s}
    counts: dict[str, int] = {}
    async with driver.transaction():
        for table, rows in _STATEMENTS.items():
            args: list[Any] = [now - timedelta(seconds=ttl[table])]
            if "$2" in rows:
                args.append(fold_module.FOLD_VERSION)
            verb = "SELECT count(*)" if dry_run else "WITH gone AS (DELETE"
            sql = (f"{verb} {rows}" if dry_run
                   else f"{verb} {rows} RETURNING 1) SELECT count(*) FROM gone")
            counts[table] = int(await driver.fetchval(sql, *args, timeout=statement_timeout_s))
    return counts
