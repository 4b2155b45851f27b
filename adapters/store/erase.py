"""Erasure in the PostgreSQL store (``core.erasure``): what ``PostgresEventStore.erase`` does in
its one transaction, under the feed lock (so no append is between reading the account's key and
committing): delete the account's data key, drop its snapshots (states hold its digests, links
and prompt keys in the clear), blank the reasons of its enforcement commands in the outbox (an
operator's reason is quoted there), and append the tombstone. Events are never rewritten: their
personal fields were sealed under the key, and the chain covers the sealed bytes.

What stays, and why: the account id (the stream's key); its events' public fields (scores,
categories, levels, rules, times); aggregate histories (an organisation's, an API key's, a
prompt's) keep what was forwarded to them, sealed under the aggregate's own key; messages still
in NATS streams (inputs, dead letters) expire with them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.erasure import ERASED, AccountErased, scrub_state
from safeguards.core.errors import CodecError, InvalidInput, RetentionBaseUnreadable
from safeguards.core.events import Event
from safeguards.core.ids import derive_id
from safeguards.core.subjects import enforce_subject

DESTROY_KEY = "DELETE FROM account_keys WHERE account_id = $1 RETURNING generation"
DROP_SNAPSHOTS = "DELETE FROM snapshots WHERE account_id = $1 RETURNING version"
# the state at a retention anchor (``retention_base``) stands for events no longer stored
ANCHOR_SNAPSHOTS = ("SELECT s.version, s.state FROM snapshots s "
                    "JOIN event_anchors a ON a.account_id = s.account_id "
                    "AND s.version = a.retained_from - 1 WHERE s.account_id = $1 "
                    "ORDER BY s.fold_version DESC")
KEEP_SNAPSHOT = ("INSERT INTO snapshots (account_id, version, fold_version, state) "
                 "VALUES ($1, $2, $3, $4)")
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE account_id = $1"
OUTBOX_ROWS = "SELECT id, payload FROM outbox WHERE subject = $1"
REWRITE_OUTBOX = "UPDATE outbox SET payload = $2 WHERE id = $1"
# Published rows that may forward the account's signals to an aggregate (prefiltered by the
# account id's bytes; ``forwards`` decides).
FORWARDED = ("SELECT id, payload FROM outbox WHERE published_at IS NOT NULL AND subject <> $1 "
             "AND position($2::bytea in payload) > 0")
DELETE_OUTBOX = "DELETE FROM outbox WHERE id = ANY($1::int8[])"


def forwards(payload: bytes, account: str) -> bool:
    """Whether an outbox message forwards ``account``'s link or score to an aggregate's
    history (its envelope names the aggregate, its body the member)."""
    try:
        signal = codec.decode_signal(payload)
    except CodecError:
        return False
    return getattr(signal.observation, "member_account", None) == account


@dataclass(frozen=True, slots=True)
class Erasure:
    account_id: str
    erased_through: int  # the last version whose personal fields are gone
    tombstone_version: int
    keys_destroyed: int
    snapshots_dropped: int
    outbox_rewritten: int  # commands' reasons blanked, and published forwards deleted


def tombstone(account: str, region: str, version: int, operator: str, keys: int,
              now: datetime) -> Event:
    event_id = derive_id("erase", account, str(version + 1))
    return Event(event_id, account, region, version + 1, now, event_id, event_id, None,
                 AccountErased(operator, version, keys))


async def shred(driver: Any, region: str, account: str,
                statement_timeout_s: float) -> tuple[int, int, int, int]:
    """Inside the erasure's transaction: (the account's version, keys destroyed, snapshots
    dropped, outbox rows rewritten)."""
    version = int(await driver.fetchval(CURRENT_VERSION, account, timeout=statement_timeout_s))
    if version == 0:
        raise InvalidInput("the account has no events in this region")
    keys = len(await driver.fetch(DESTROY_KEY, account, timeout=statement_timeout_s))
    anchored = await driver.fetch(ANCHOR_SNAPSHOTS, account, timeout=statement_timeout_s)
    snapshots = len(await driver.fetch(DROP_SNAPSHOTS, account, timeout=statement_timeout_s))
    if anchored:
        # a truncated history's state has no events to refold from: kept, scrubbed, carried to
        # this fold (an earlier fold's base is never dropped: the history would be lost)
        base = next((st for _, data in anchored
                     if (st := codec.carry_state(bytes(data))) is not None), None)
        if base is None:  # refused before anything is committed: add the upcaster, erase again
            raise RetentionBaseUnreadable(
                "the account's retention base was made by a fold this build cannot carry: "
                "erasing it would lose its history; nothing was erased")
        await driver.execute(KEEP_SNAPSHOT, account, anchored[0][0], fold_module.FOLD_VERSION,
                             codec.encode_state(scrub_state(base)), timeout=statement_timeout_s)
    rewritten = 0
    for outbox_id, payload in await driver.fetch(OUTBOX_ROWS, enforce_subject(region, account),
                                                 timeout=statement_timeout_s):
        command = codec.decode_command(bytes(payload))
        if command.reason != ERASED:
            await driver.execute(REWRITE_OUTBOX, outbox_id, codec.encode_command(
                dataclasses.replace(command, reason=ERASED)), timeout=statement_timeout_s)
            rewritten += 1
    forwarded = [row[0] for row in await driver.fetch(
        FORWARDED, enforce_subject(region, account), account.encode("utf-8"),
        timeout=statement_timeout_s) if forwards(bytes(row[1]), account)]
    if forwarded:
        await driver.execute(DELETE_OUTBOX, forwarded, timeout=statement_timeout_s)
    return version, keys, snapshots, rewritten + len(forwarded)
