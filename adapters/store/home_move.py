"""Moving an account's history to its new home region (``safeguards ops migrate-home``).

The account's events are read from the old home's store (personal fields opened with the old
home's data key) and appended to the new home's store as the same events in the new region
(same ids, versions, times and bodies; sealed under the new home's key and chained under its
chain key from a fresh start), with the old home's newest enforcement command re-issued
through the new home's outbox (so the new home's relay signs and publishes it, and every gate
keeps applying the account's level). ``copy_history`` may run again to bring over what
arrived at the old home meanwhile (it continues from the version the new home holds).

Refused: an account erased in the old home (nothing personal left to move, and the tombstone
is the old home's record), one whose events retention truncated (its state is a snapshot, not
events), and a new home that already holds a history of its own for the account.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from safeguards.adapters.store.event_retention import chain_anchor
from safeguards.core import codec
from safeguards.core.erasure import AccountErased
from safeguards.core.errors import InvalidInput
from safeguards.core.ids import derive_id
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.subjects import enforce_subject

LATEST_COMMAND = "SELECT payload FROM outbox WHERE subject = $1 ORDER BY id DESC LIMIT 1"


async def _latest_command(store: Any, account: str) -> bytes | None:
    async with store._connect() as conn:
        driver = await store._driver(conn)
        data = await driver.fetchval(LATEST_COMMAND, enforce_subject(store.region, account),
                                     timeout=store._timeout)
    return None if data is None else bytes(data)


async def copy_history(source: Any, target: Any, account: str) -> int:
    """Append to ``target`` (the new home's ``PostgresEventStore``) the events of ``account``
    that ``source`` (the old home's) holds beyond what ``target`` has; events copied."""
    if source.region == target.region:
        raise InvalidInput("the account is already homed there")
    if await chain_anchor(source, account) is not None:
        raise InvalidInput("its history was truncated by retention: it cannot be moved")
    history = await source.history(account)
    if any(isinstance(e.body, AccountErased) for e in history):
        raise InvalidInput("the account was erased in its old home: nothing to move")
    have = await target.history(account)
    if have and [e.event_id for e in have] != [e.event_id for e in history[:len(have)]]:
        raise InvalidInput("the new home already holds a history of its own for the account")
    events = tuple(dataclasses.replace(e, region=target.region) for e in history[len(have):])
    if not events:
        return 0
    outbox: tuple[OutboxMessage, ...] = ()
    latest = await _latest_command(source, account)
    if latest is not None:
        command = dataclasses.replace(codec.decode_command(latest), region=target.region)
        outbox = (OutboxMessage(derive_id("migrated", command.command_id, target.region),
                                enforce_subject(target.region, account),
                                codec.encode_command(command)),)
    await target.append(AppendRequest(account, len(have), events, None, outbox))
    return len(events)
