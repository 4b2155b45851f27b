"""The read side of the PostgreSQL event store: connections, states (newest snapshot plus the
tail), history, the feed, the outbox relay's calls and the operator queries. The hot reads go
straight to the asyncpg connection SQLAlchemy pools (statements in ``pg_sql``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from safeguards.adapters.store import pg_sql as sql
from safeguards.adapters.store.errors import translate_errors
from safeguards.adapters.store.migrate import async_url
from safeguards.adapters.store.retention_base import rebase
from safeguards.adapters.store.reviews import postgres_open_reviews
from safeguards.adapters.store.schema import events, operator_reads, outbox, snapshots
from safeguards.adapters.store.sealing import (
    KEYS_FOR,
    DataKey,
    Sealing,
    load_data_master_key,
    might_be_sealed,
    open_body,
)
from safeguards.adapters.store.validation import (
    check_limit,
    check_range,
    check_state_at,
    check_text,
)
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.chain import ChainRow
from safeguards.core.errors import InvalidInput, VersionGap, WrongRegionDatabase
from safeguards.core.events import Event
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.ports import AccountRisk, FeedEntry, OpenReview, OutboxMessage, PendingOutbox
from safeguards.core.state import AccountState, fold, initial_state


def event_from_row(row: Any, sealing: Sealing | None = None,
                   keys: dict[str, DataKey] | None = None) -> Event:
    """An event from its stored row; its sealed fields opened with ``keys`` (each account's
    live data key), erased where its key is gone (or where no ``sealing`` is given)."""
    (account_id, version, region, event_id, type_name, schema_version, occurred_at,
     causation_id, correlation_id, policy_version, body) = row
    stored = bytes(body)
    decoded = (codec.unpack_body(type_name, schema_version, stored)
               if not might_be_sealed(stored) else
               open_body(sealing or _NO_KEYS, type_name, schema_version, stored, account_id,
                         event_id, None if keys is None else keys.get(account_id)))
    return Event(event_id, account_id, region, version, occurred_at, causation_id,
                 correlation_id, policy_version, decoded)


_NO_KEYS = Sealing("none", bytes(32))  # opens nothing: every sealed field reads as erased


class PostgresReadSide:
    """A region's store on PostgreSQL: connections, and every read (states, history, the feed,
    the outbox relay's calls, the operator queries). ``PostgresEventStore`` adds the appends."""

    def __init__(self, region: str, engine_or_url: AsyncEngine | str, *,
                 statement_timeout_s: float, connect_timeout_s: float, pool_size: int,
                 data_key: bytes | None = None) -> None:
        self._region = validate_region(region)
        self._sealing = Sealing(self._region, data_key or load_data_master_key(self._region))
        self._region_checked = False  # the database's region marker, read once
        self._timeout = statement_timeout_s
        if isinstance(engine_or_url, AsyncEngine):
            self._engine, self._owns_engine = engine_or_url, False
        else:
            # Deadlines: connecting, waiting for a pooled connection, and every statement.
            self._engine = create_async_engine(
                async_url(engine_or_url), pool_size=pool_size, max_overflow=pool_size,
                pool_timeout=connect_timeout_s,
                connect_args={"timeout": connect_timeout_s,
                              "command_timeout": statement_timeout_s},
            )
            self._owns_engine = True

    @property
    def region(self) -> str:
        return self._region

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self._engine.connect() as conn:
                if not self._region_checked:
                    await self._check_region(conn)
                try:
                    yield conn
                except asyncpg.InternalClientError:
                    # The driver connection is mid-operation (a call cancelled by its deadline
                    # while the server restarted): never hand it to the next caller.
                    await conn.invalidate()
                    raise

    async def _check_region(self, conn: AsyncConnection) -> None:
        """The database's region marker is this store's region (the first store to open a
        database claims it); anything else is refused before any read or write."""
        driver = await self._driver(conn)
        claimed = await driver.fetchval(sql.REGION_MARKER, timeout=self._timeout)
        if claimed is None:  # the first store here (a write only then, not on every open)
            await driver.execute(sql.CLAIM_REGION, self._region, timeout=self._timeout)
            claimed = await driver.fetchval(sql.REGION_MARKER, timeout=self._timeout)
        if claimed != self._region:
            raise WrongRegionDatabase(self._region, str(claimed))
        self._region_checked = True

    @staticmethod
    async def _driver(conn: AsyncConnection) -> Any:
        raw = await conn.get_raw_connection()
        return raw.driver_connection


    # --- reads ----------------------------------------------------------------------------------

    async def _events(self, driver: Any, rows: Sequence[Any]) -> list[Event]:
        """Stored rows as events, sealed fields opened: the data keys of the accounts whose
        rows hold sealed fields are read in one statement (none when no row does)."""
        sealed = list({r[0] for r in rows if might_be_sealed(r[10])})
        keys: dict[str, DataKey] = {}
        if sealed:
            for account, generation, wrapped in await driver.fetch(KEYS_FOR, sealed,
                                                                   timeout=self._timeout):
                keys[account] = self._sealing.unwrap(account, generation, bytes(wrapped))
        return [event_from_row(r, self._sealing, keys) for r in rows]

    async def _states(
        self, conn: AsyncConnection, targets: dict[str, int]
    ) -> dict[str, AccountState]:
        """Each account's state at its target version (capped at its current one): the newest
        snapshot at or below the target that this fold wrote, plus the events after it."""
        driver = await self._driver(conn)
        accounts = list(targets)
        his = [targets[a] for a in accounts]
        states = {a: initial_state(a, self._region) for a in accounts}
        for account, _version, data in await driver.fetch(
            sql.SNAPSHOT_BASES, accounts, his, fold_module.FOLD_VERSION, timeout=self._timeout
        ):
            decoded = codec.decode_state(bytes(data))
            if decoded is not None:  # another fold wrote it: rebuild from events instead
                states[account] = decoded
        los = [states[a].version for a in accounts]
        tails: dict[str, list[Event]] = {a: [] for a in accounts}
        rows = await driver.fetch(sql.TAILS, accounts, los, his, timeout=self._timeout)
        for event in await self._events(driver, rows):
            tails[event.account_id].append(event)
        # a truncated history's events start after its retention base (``retention_base``)
        await rebase(driver, states, tails, targets, self._timeout)
        return {a: fold(states[a], tails[a]) for a in accounts}

    async def load(self, account_id: str) -> AccountState:
        validate_account_id(account_id)
        return await self._state_at_version(account_id, None)

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        """Two statements for all of them: the newest snapshots, then every tail after them."""
        accounts = list(dict.fromkeys(account_ids))
        for account_id in accounts:
            validate_account_id(account_id)
        if not accounts:
            return {}
        async with self._connect() as conn:
            return await self._states(conn, dict.fromkeys(accounts, sql.NO_LIMIT))

    async def _state_at_version(self, account_id: str, version: int | None) -> AccountState:
        """The state at ``version`` (None: the current one). Two statements on an idle pooled
        connection, straight through the driver: this is every actor activation's read."""
        hi = sql.NO_LIMIT if version is None else version
        async with self._connect() as conn:
            driver = await self._driver(conn)
            data = await driver.fetchval(sql.LATEST_SNAPSHOT, account_id, fold_module.FOLD_VERSION,
                                         hi, timeout=self._timeout)
            state = None if data is None else codec.decode_state(bytes(data))
            if state is None:  # none, or another fold's: rebuild from the events
                state = initial_state(account_id, self._region)
            rows = await driver.fetch(sql.TAIL, account_id, state.version, hi,
                                      timeout=self._timeout)
            states, tails = {account_id: state}, {account_id: await self._events(driver, rows)}
            await rebase(driver, states, tails, {account_id: hi}, self._timeout)
        return fold(states[account_id], tails[account_id])

    async def record_read(self, operator: str, command: str, subject: str,
                          signature: str | None = None) -> None:
        """Audit one operator read before it happens (a read that cannot be recorded fails);
        ``signature``: the reader's (``operators.read_signature``), where they hold a key."""
        for value, what in ((operator, "operator"), (command, "command"), (subject, "subject")):
            check_text(value, what)
        if signature is not None:
            check_text(signature, "signature")
        async with self._connect() as conn, conn.begin():
            await conn.execute(operator_reads.insert().values(
                operator=operator, command=command, subject=subject, signature=signature))

    async def operator_reads(self, limit: int = 100) -> list[tuple[Any, ...]]:
        """The newest audited reads: (at, operator, command, subject, signature)."""
        check_limit(limit)
        async with self._connect() as conn:
            rows = await conn.execute(
                sa.select(operator_reads.c.at, operator_reads.c.operator,
                          operator_reads.c.command, operator_reads.c.subject,
                          operator_reads.c.signature)
                .order_by(operator_reads.c.id.desc()).limit(limit))
            return [tuple(r) for r in rows]

    async def chain(self, account_id: str) -> list[ChainRow]:
        validate_account_id(account_id)
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = await driver.fetch(sql.CHAIN, account_id, timeout=self._timeout)
        return [ChainRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bytes(r[10]),
                         None if r[11] is None else bytes(r[11])) for r in rows]

    async def history(
        self,
        account_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Events in version order within both ranges (each bound inclusive)."""
        validate_account_id(account_id)
        check_range(from_version, to_version, since, until)
        hi = sql.NO_LIMIT if to_version is None else to_version
        async with self._connect() as conn:
            driver = await self._driver(conn)
            bounds = [t for t in (since, until) if t is not None]
            rows = await driver.fetch(sql.HISTORY_BY_BOUNDS[since is not None, until is not None],
                                      account_id, from_version, hi, *bounds,
                                      timeout=self._timeout)
            return await self._events(driver, rows)

    async def select_events(self, account_id: str, *, types: Sequence[str] = (),
                            versions: Sequence[int] = (), limit: int = 1000,
                            after: int = 0) -> list[Event]:
        """In version order: the events at ``versions`` if given, else the newest ``limit`` of
        ``types`` after version ``after`` (a long history's decisions and operator actions)."""
        validate_account_id(account_id)
        check_limit(limit)
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = (await driver.fetch(sql.AT_VERSIONS, account_id, sorted(set(versions))[:limit],
                                       timeout=self._timeout) if versions else
                    (await driver.fetch(sql.NEWEST_OF_TYPES, account_id, list(types), limit,
                                        after, timeout=self._timeout))[::-1])
            return await self._events(driver, rows)

    async def state_at(
        self, account_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> AccountState:
        """The state at a version, or at a time: up to the last version that occurred by then."""
        validate_account_id(account_id)
        check_state_at(version, at)
        if at is not None:
            async with self._connect() as conn:
                version, kept_from = await (await self._driver(conn)).fetchrow(
                    sql.VERSION_AT, account_id, at, timeout=self._timeout)
            if kept_from is not None and version < kept_from:  # before its retention base
                raise VersionGap(f"account {account_id!r}: no event it kept occurred by "
                                 f"{at.isoformat()}; retention removed v1..v{kept_from - 1}")
        return await self._state_at_version(account_id, version)

    async def read_feed(self, after_position: int, limit: int) -> list[FeedEntry]:
        check_limit(limit)
        if after_position < 0:
            raise InvalidInput("after_position must be >= 0")
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = await driver.fetch(sql.FEED, self._region, after_position, limit,
                                      timeout=self._timeout)
            decoded = await self._events(driver, [r[1:] for r in rows])
        return [FeedEntry(r[0], e) for r, e in zip(rows, decoded, strict=True)]

    async def histories(self, account_ids: Sequence[str]) -> dict[str, list[Event]]:
        accounts = [validate_account_id(a) for a in account_ids]
        out: dict[str, list[Event]] = {}
        if not accounts:
            return out
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = await driver.fetch(sql.TAILS, accounts, [0] * len(accounts),
                                      [sql.NO_LIMIT] * len(accounts), timeout=self._timeout)
            decoded = await self._events(driver, rows)
        for event in decoded:
            out.setdefault(event.account_id, []).append(event)
        return out

    async def account_risks(self, since: datetime | None = None) -> list[AccountRisk]:
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = await driver.fetch(sql.ACCOUNT_RISKS, self._region, since,
                                      timeout=self._timeout)
        return [AccountRisk(r[0], r[1], float(r[2])) for r in rows]

    async def pending_outbox(self, limit: int) -> list[PendingOutbox]:
        """Unpublished messages, oldest first; each call counts one attempt for each message.
        Rows another relay is handing out at the same moment are skipped, not waited for."""
        check_limit(limit)
        pick = (sa.select(outbox.c.id).where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True))
        q = (sa.update(outbox).where(outbox.c.id.in_(pick.scalar_subquery()))
             .values(attempts=outbox.c.attempts + 1)
             .returning(outbox.c.id, outbox.c.message_id, outbox.c.subject, outbox.c.payload,
                        outbox.c.attempts))
        async with self._connect() as conn, conn.begin():
            rows = (await conn.execute(q)).all()
        return sorted(
            (PendingOutbox(r[0], OutboxMessage(r[1], r[2], bytes(r[3])), r[4]) for r in rows),
            key=lambda p: p.outbox_id,
        )

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        q = (sa.update(outbox)
             .where(outbox.c.id.in_(list(outbox_ids)), outbox.c.published_at.is_(None))
             .values(published_at=sa.func.now()))
        async with self._connect() as conn, conn.begin():
            await conn.execute(q)

    async def mark_published_messages(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        # One statement on an idle pooled connection, straight through the driver (it runs for
        # every command the relay publishes). Only pending rows qualify: the partial index on
        # them keeps this a small scan.
        async with self._connect() as conn:
            driver = await self._driver(conn)
            await driver.execute(sql.MARK_PUBLISHED_MESSAGES, list(message_ids),
                                 timeout=self._timeout)

    async def latest_published(self, scan: int) -> list[OutboxMessage]:
        check_limit(scan)
        recent = (sa.select(outbox.c.id, outbox.c.message_id, outbox.c.subject, outbox.c.payload)
                  .where(outbox.c.published_at.is_not(None))
                  .order_by(outbox.c.id.desc()).limit(scan).subquery())
        q = (sa.select(recent.c.message_id, recent.c.subject, recent.c.payload)
             .ext(distinct_on(recent.c.subject)).order_by(recent.c.subject, recent.c.id.desc()))
        async with self._connect() as conn:
            rows = (await conn.execute(q)).all()
        return [OutboxMessage(message_id=r[0], subject=r[1], payload=bytes(r[2])) for r in rows]

    async def inbox_contains(self, inbox_key: str) -> bool:
        q = sa.text("SELECT EXISTS (SELECT 1 FROM inbox WHERE inbox_key = :k)")
        async with self._connect() as conn:
            found = bool((await conn.execute(q, {"k": inbox_key})).scalar_one())
            await conn.rollback()
        return found

    async def account_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        check_limit(limit)
        q = sa.select(events.c.account_id).distinct().order_by(events.c.account_id).limit(limit)
        if after is not None:
            q = q.where(events.c.account_id > after)
        async with self._connect() as conn:
            rows = (await conn.execute(q)).scalars().all()
            await conn.rollback()
        return list(rows)

    async def open_reviews(self, *, after: str | None = None,
                           limit: int = 1000) -> list[OpenReview]:
        check_limit(limit)
        async with self._connect() as conn:
            driver = await self._driver(conn)
            # The queue reads no sealed field (operators, levels, the automatic request's
            # reason), so its candidates decode without keys: sealed values read as erased.
            return await postgres_open_reviews(driver, event_from_row, after, limit,
                                               self._timeout)

    async def snapshot_versions(self, account_id: str) -> list[int]:
        """Versions of the account's snapshots that the current fold can use, ascending."""
        q = (sa.select(snapshots.c.version)
             .where(snapshots.c.account_id == account_id,
                    snapshots.c.fold_version == fold_module.FOLD_VERSION)
             .order_by(snapshots.c.version))
        async with self._connect() as conn:
            rows = (await conn.execute(q)).scalars().all()
            await conn.rollback()
        return list(rows)
