"""The regional event store on PostgreSQL: SQLAlchemy Core on asyncpg.

Feed order. Every append, single or grouped, first locks its region's row in ``feed_counter``
(``SELECT ... FOR UPDATE``) and holds it until it commits; feed positions are taken from that row
and written back before the commit. So appenders pass through that point one at a time, a
transaction gets positions only after the one before it has committed, and positions are
therefore dense and in commit order: a reader that has seen position p+1 can never later find a
committed p. A sequence or identity column would not do: numbers are handed out at insert time,
so a transaction that took 7 and commits after the one that took 8 is skipped by a reader that
already moved past 8. The transaction-id cut-off (``pg_snapshot_xmin``) avoids the serialisation
but makes readers wait on the oldest open transaction of the whole database and needs xid8
bookkeeping in every row; the lock is simpler and its cost is paid once per *group* commit, which
is how the actors append under load (``append_batch``). The lock also makes every append's
checks race-free: the inbox lookup and the version check run under it, so ``UNIQUE (account_id,
version)`` is the last fence rather than the everyday path.

Round trips per group commit: begin + lock, one pre-check (current versions and known inbox
keys of all the batch's accounts), a binary COPY of the events, one statement for the inbox
rows, outbox rows, due snapshots and the counter, commit. The schema and the less frequent
statements go through SQLAlchemy Core; the hot ones (the append, load, history, feed) go straight
to the asyncpg connection SQLAlchemy pools, which saves its per-row overhead.

Snapshots every ``snapshot_every`` events, in the append's own transaction. The store keeps the
state it last appended for each account (LRU) and folds each append onto it while the COPY
streams, so a snapshot costs one encode, not a read and decode of the tail. A kept state is used
only when its version is exactly the append's expected version, so it is always the fold of what
is stored. (An erasure that deletes an account's events must also drop it: ``forget``.) Where no
state is kept (the first append since start-up), the snapshot is built from the stored snapshot
and tail right after the commit; a failure there is counted, not raised: snapshots are a cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from safeguards.adapters.store.bodies import BodyPacker
from safeguards.adapters.store.common import (
    DEFAULT_SNAPSHOT_EVERY,
    UnencodableBody,
    check_batch,
    check_limit,
    check_range,
    check_request,
    check_state_at,
)
from safeguards.adapters.store.errors import translate_errors
from safeguards.adapters.store.migrate import async_url
from safeguards.adapters.store.reviews import postgres_open_reviews
from safeguards.adapters.store.schema import events, outbox, snapshots
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.errors import ConcurrencyConflict, InvalidInput
from safeguards.core.events import Event
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.ports import (
    AppendRequest,
    AppendResult,
    FeedEntry,
    OpenReview,
    OutboxMessage,
    PendingOutbox,
)
from safeguards.core.state import AccountState, fold, initial_state

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("account_id", "version", "position", "region", "event_id", "type",
                 "schema_version", "occurred_at", "causation_id", "correlation_id",
                 "policy_version", "body")

_LOCK_FEED = sa.text("SELECT last_position FROM feed_counter WHERE region = :region FOR UPDATE")
_CREATE_FEED = sa.text(
    "INSERT INTO feed_counter (region, last_position) VALUES (:region, 0) "
    "ON CONFLICT (region) DO NOTHING"
)
# Current version of each account and which of the batch's inbox keys are already recorded.
_PRECHECK = """
SELECT 0 AS kind, a.id AS key,
       (SELECT max(e.version) FROM events e WHERE e.account_id = a.id) AS version
  FROM unnest($1::text[]) AS a(id)
UNION ALL
SELECT 1, i.inbox_key, NULL FROM inbox i WHERE i.inbox_key = ANY($2::text[])
"""
_KNOWN_EVENT_IDS = "SELECT event_id FROM events WHERE event_id = ANY($1::text[])"
# Inbox rows, outbox rows and the feed counter in one statement, one round trip.
_FINISH = """
WITH i AS (
  INSERT INTO inbox (inbox_key, account_id) SELECT * FROM unnest($2::text[], $3::text[])
), o AS (
  INSERT INTO outbox (message_id, subject, payload)
  SELECT * FROM unnest($4::text[], $5::text[], $6::bytea[])
), s AS (
  INSERT INTO snapshots (account_id, version, fold_version, state)
  SELECT a, v, $10::int4, st FROM unnest($8::text[], $9::int8[], $11::bytea[]) AS t(a, v, st)
  ON CONFLICT DO NOTHING
)
UPDATE feed_counter SET last_position = $7 WHERE region = $1
"""
_SNAPSHOT_BASES = """
SELECT DISTINCT ON (s.account_id) s.account_id, s.version, s.state
  FROM snapshots s JOIN unnest($1::text[], $2::int8[]) AS t(a, hi)
    ON s.account_id = t.a AND s.version <= t.hi
 WHERE s.fold_version = $3
 ORDER BY s.account_id, s.version DESC
"""
_TAILS = """
SELECT e.account_id, e.version, e.region, e.event_id, e.type, e.schema_version, e.occurred_at,
       e.causation_id, e.correlation_id, e.policy_version, e.body
  FROM unnest($1::text[], $2::int8[], $3::int8[]) AS t(a, lo, hi)
  JOIN events e ON e.account_id = t.a AND e.version > t.lo AND e.version <= t.hi
 ORDER BY e.account_id, e.version
"""
_INSERT_SNAPSHOTS = """
INSERT INTO snapshots (account_id, version, fold_version, state)
SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::bytea[])
ON CONFLICT DO NOTHING
"""

_NO_LIMIT = 2**62
_LATEST_SNAPSHOT = """
SELECT state FROM snapshots WHERE account_id = $1 AND fold_version = $2 AND version <= $3
 ORDER BY version DESC LIMIT 1
"""
_TAIL = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events WHERE account_id = $1 AND version > $2 AND version <= $3 ORDER BY version
"""
_MARK_PUBLISHED_MESSAGES = """
UPDATE outbox SET published_at = now()
 WHERE published_at IS NULL AND message_id = ANY($1::text[])
"""
_HISTORY = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events
 WHERE account_id = $1 AND version >= $2 AND version <= $3{time}
 ORDER BY version
"""
# One statement per combination of time bounds, so that each gets a plan that can use the
# (account_id, occurred_at) index when a time range narrows a long history.
_HISTORY_BY_BOUNDS = {
    (False, False): _HISTORY.format(time=""),
    (True, False): _HISTORY.format(time=" AND occurred_at >= $4"),
    (False, True): _HISTORY.format(time=" AND occurred_at <= $4"),
    (True, True): _HISTORY.format(time=" AND occurred_at >= $4 AND occurred_at <= $5"),
}
_FEED = """
SELECT position, account_id, version, region, event_id, type, schema_version, occurred_at,
       causation_id, correlation_id, policy_version, body
  FROM events WHERE region = $1 AND position > $2 ORDER BY position LIMIT $3
"""


def _event_from_row(row: Any) -> Event:
    (account_id, version, region, event_id, type_name, schema_version, occurred_at,
     causation_id, correlation_id, policy_version, body) = row
    return Event(event_id, account_id, region, version, occurred_at, causation_id,
                 correlation_id, policy_version,
                 codec.unpack_body(type_name, schema_version, bytes(body)))


@dataclass(frozen=True, slots=True)
class _Written:
    results: list[AppendResult | ConcurrencyConflict]
    states: dict[str, AccountState | None]  # after the append; None where the store can't tell
    unsnapshotted: dict[str, int]  # snapshots due that need a read of the stored tail


class _EventIdTaken(Exception):
    """The fast path hit an event id that is already stored: redo the batch, checking ids."""


class PostgresEventStore:
    """One region's event store in that region's PostgreSQL (migrated with ``migrate``)."""

    def __init__(
        self,
        region: str,
        engine_or_url: AsyncEngine | str,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        statement_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        pool_size: int = 10,
        recent_states: int = 10_000,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self._region = validate_region(region)
        self.snapshot_every = snapshot_every
        self._timeout = statement_timeout_s
        self._bodies = BodyPacker()
        # account -> (fold version, state at the version this store last appended), LRU
        self._recent: OrderedDict[str, tuple[int, AccountState]] = OrderedDict()
        self._recent_size = recent_states
        self.snapshot_failures = 0  # snapshots that could not be written after a commit
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

    async def __aenter__(self) -> PostgresEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self._engine.connect() as conn:
                try:
                    yield conn
                except asyncpg.InternalClientError:
                    # The driver connection is mid-operation (a call cancelled by its deadline
                    # while the server restarted): never hand it to the next caller.
                    await conn.invalidate()
                    raise

    # --- writes ---------------------------------------------------------------------------------

    async def append(self, request: AppendRequest) -> AppendResult:
        check_request(self._region, request)
        (result,) = await self._append_all([request])
        if isinstance(result, ConcurrencyConflict):
            raise result
        return result

    async def append_batch(
        self, requests: Sequence[AppendRequest]
    ) -> list[AppendResult | ConcurrencyConflict]:
        check_batch(self._region, requests)
        if not requests:
            return []
        return await self._append_all(requests)

    async def _append_all(
        self, requests: Sequence[AppendRequest]
    ) -> list[AppendResult | ConcurrencyConflict]:
        async with self._connect() as conn:
            try:
                async with conn.begin():
                    written = await self._write(conn, requests, check_event_ids=False)
            except _EventIdTaken:
                # Rare: a re-decided input reused event ids (stored ones, or another request's
                # in this batch). The transaction rolled back; redo it with the ids checked, so
                # only the requests that reuse them fail.
                async with conn.begin():
                    written = await self._write(conn, requests, check_event_ids=True)
            self._remember(written.states)
            if written.unsnapshotted:
                await self._write_snapshots(conn, written.unsnapshotted)
        return written.results

    def forget(self, account_id: str) -> None:
        """Drop the kept state of an account whose stored history changed under the store."""
        self._recent.pop(account_id, None)

    def _remember(self, states: dict[str, AccountState | None]) -> None:
        """Keep the committed states for the next appends (LRU, ``recent_states`` accounts)."""
        recent = self._recent
        fold_version = fold_module.FOLD_VERSION
        for account, state in states.items():
            recent.pop(account, None)
            if state is not None:
                recent[account] = (fold_version, state)
        while len(recent) > self._recent_size:
            recent.popitem(last=False)

    def _known_state(self, account: str, version: int) -> AccountState | None:
        """The account's state at ``version`` if this store holds it: it does when it appended
        the events up to there itself (or loaded them for a snapshot). Whoever wrote the earlier
        events, a state at exactly the version the store is at is the fold of what is stored."""
        if version == 0:
            return initial_state(account, self._region)
        entry = self._recent.get(account)
        if entry is not None and entry[0] == fold_module.FOLD_VERSION \
                and entry[1].version == version:
            return entry[1]
        return None

    async def _write(
        self, conn: AsyncConnection, requests: Sequence[AppendRequest], *, check_event_ids: bool
    ) -> _Written:
        """The append transaction's body; the caller owns the transaction (tests hold it open)."""
        # This statement, through SQLAlchemy, also starts the driver's transaction: the raw
        # driver calls below must never run before it, or they would autocommit.
        params = {"region": self._region}
        last = (await conn.execute(_LOCK_FEED, params)).scalar_one_or_none()
        if last is None:  # the region's first append: create its counter row, then lock it
            await conn.execute(_CREATE_FEED, params)
            last = (await conn.execute(_LOCK_FEED, params)).scalar_one()
        driver = await self._driver(conn)
        accounts = list(dict.fromkeys(r.account_id for r in requests))
        keys = [r.inbox_key for r in requests if r.inbox_key is not None]
        current: dict[str, int] = {}
        known_keys: set[str] = set()
        for kind, key, version in await driver.fetch(_PRECHECK, accounts, keys,
                                                     timeout=self._timeout):
            if kind == 0:
                current[key] = version or 0
            else:
                known_keys.add(key)
        known_ids: set[str] = set()
        if check_event_ids:
            ids = [e.event_id for r in requests for e in r.events]
            known_ids = {row[0] for row in await driver.fetch(_KNOWN_EVENT_IDS, ids,
                                                               timeout=self._timeout)}

        results: list[AppendResult | ConcurrencyConflict] = []
        accepted: list[AppendRequest] = []
        inbox_keys: list[str] = []
        inbox_accounts: list[str] = []
        outbox_rows: list[OutboxMessage] = []
        before = dict(current)
        for request in requests:
            account = request.account_id
            version = current[account]
            if request.inbox_key is not None and request.inbox_key in known_keys:
                results.append(AppendResult(account, version, duplicate=True))
                continue
            if request.expected_version != version:
                results.append(ConcurrencyConflict(account, request.expected_version, version))
                continue
            if check_event_ids:  # the fast path leaves event id clashes to the unique index
                ids = [e.event_id for e in request.events]
                if len(set(ids)) != len(ids) or not known_ids.isdisjoint(ids):
                    results.append(
                        ConcurrencyConflict(account, request.expected_version, version))
                    continue
                known_ids.update(ids)
            accepted.append(request)
            if request.inbox_key is not None:
                known_keys.add(request.inbox_key)
                inbox_keys.append(request.inbox_key)
                inbox_accounts.append(account)
            outbox_rows.extend(request.outbox)
            current[account] = version + len(request.events)
            results.append(AppendResult(account, current[account]))

        # The states after this append, where the store knows the state it appends onto (see
        # _advance); the snapshots due go out with the inbox rows, in this transaction.
        states: dict[str, AccountState | None] = {}
        count = sum(len(r.events) for r in accepted)
        if count:
            try:
                # A generator, not a list: asyncpg streams the COPY in chunks as it encodes, so
                # the server indexes one chunk while this process packs and folds the next.
                await driver.copy_records_to_table(
                    "events", records=self._rows(accepted, last, states), columns=EVENT_COLUMNS,
                    timeout=self._timeout)
            except Exception as exc:
                if getattr(exc, "constraint_name", None) == "events_event_id_key" and \
                        not check_event_ids:
                    raise _EventIdTaken from exc
                raise
        else:
            for request in accepted:
                self._advance(states, request)
        every = self.snapshot_every
        snapshot_due = [a for a, v in current.items() if v // every > before[a] // every]
        snap_states = [st for a in snapshot_due if (st := states.get(a)) is not None]
        unsnapshotted = {a: current[a] for a in snapshot_due if states.get(a) is None}

        position = last + count
        if inbox_keys or outbox_rows or count:
            await driver.execute(
                _FINISH, self._region, inbox_keys, inbox_accounts,
                [m.message_id for m in outbox_rows], [m.subject for m in outbox_rows],
                [m.payload for m in outbox_rows], position,
                [st.account_id for st in snap_states], [st.version for st in snap_states],
                fold_module.FOLD_VERSION, [codec.encode_state(st) for st in snap_states],
                timeout=self._timeout,
            )
        return _Written(results, states, unsnapshotted)

    def _advance(self, states: dict[str, AccountState | None], request: AppendRequest) -> None:
        account = request.account_id
        given = request.state_after
        if (given is not None and given.account_id == account
                and given.version == request.expected_version + len(request.events)):
            states[account] = given  # the writer's own fold: no need to fold again
            return
        base = states[account] if account in states else self._known_state(
            account, request.expected_version)
        states[account] = None if base is None else fold(base, request.events)

    def _rows(self, accepted: list[AppendRequest], last: int,
              states: dict[str, AccountState | None]) -> Iterator[tuple[Any, ...]]:
        """The COPY rows of the accepted appends, with feed positions after ``last``; each
        request's events are folded into ``states`` once its rows are out."""
        position = last
        region = self._region
        pack = self._bodies.pack  # codec.pack_body's bytes; see bodies.py
        for request in accepted:
            for e in request.events:
                position += 1
                try:
                    body = pack(e.body)
                except (TypeError, ValueError, OverflowError) as exc:
                    # Aborts the COPY, so the whole transaction: nothing of the batch is written.
                    raise UnencodableBody(e.version, exc) from None
                yield (e.account_id, e.version, position, region, e.event_id, e.body.TYPE,
                       e.body.SCHEMA_VERSION, e.occurred_at, e.causation_id, e.correlation_id,
                       e.policy_version, body)
            self._advance(states, request)

    @staticmethod
    async def _driver(conn: AsyncConnection) -> Any:
        raw = await conn.get_raw_connection()
        return raw.driver_connection

    async def _write_snapshots(self, conn: AsyncConnection, due: dict[str, int]) -> None:
        """Snapshots due for accounts whose state this store did not hold (it has not appended
        to them since it started): read the newest snapshot and the tail, fold, write.

        The append has committed: a failure here is counted and logged, not raised, because a
        snapshot is only a cache (the next boundary writes one; loads fold a longer tail).
        """
        try:
            async with conn.begin():
                states = await self._states(conn, due)
                driver = await self._driver(conn)
                await driver.execute(
                    _INSERT_SNAPSHOTS, list(states), [s.version for s in states.values()],
                    [fold_module.FOLD_VERSION] * len(states),
                    [codec.encode_state(s) for s in states.values()], timeout=self._timeout,
                )
            self._remember(dict(states))
        except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            self.snapshot_failures += 1
            log.warning("snapshot write failed after a committed append (%s); %d accounts",
                        type(exc).__name__, len(due))

    async def save_snapshot(self, state: AccountState) -> None:
        """Store ``state`` as the snapshot at its version (a cache; never the truth)."""
        async with self._connect() as conn, conn.begin():
            driver = await self._driver(conn)
            await driver.execute(_INSERT_SNAPSHOTS, [state.account_id], [state.version],
                                 [fold_module.FOLD_VERSION], [codec.encode_state(state)],
                                 timeout=self._timeout)

    # --- reads ----------------------------------------------------------------------------------

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
            _SNAPSHOT_BASES, accounts, his, fold_module.FOLD_VERSION, timeout=self._timeout
        ):
            decoded = codec.decode_state(bytes(data))
            if decoded is not None:  # another fold wrote it: rebuild from events instead
                states[account] = decoded
        los = [states[a].version for a in accounts]
        tails: dict[str, list[Event]] = {a: [] for a in accounts}
        for row in await driver.fetch(_TAILS, accounts, los, his, timeout=self._timeout):
            tails[row[0]].append(_event_from_row(row))
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
            return await self._states(conn, dict.fromkeys(accounts, _NO_LIMIT))

    async def _state_at_version(self, account_id: str, version: int | None) -> AccountState:
        """The state at ``version`` (None: the current one). Two statements on an idle pooled
        connection, straight through the driver: this is every actor activation's read."""
        hi = _NO_LIMIT if version is None else version
        async with self._connect() as conn:
            driver = await self._driver(conn)
            data = await driver.fetchval(_LATEST_SNAPSHOT, account_id, fold_module.FOLD_VERSION,
                                         hi, timeout=self._timeout)
            state = None if data is None else codec.decode_state(bytes(data))
            if state is None:  # none, or another fold's: rebuild from the events
                state = initial_state(account_id, self._region)
            rows = await driver.fetch(_TAIL, account_id, state.version, hi, timeout=self._timeout)
        return fold(state, [_event_from_row(r) for r in rows])

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
        hi = _NO_LIMIT if to_version is None else to_version
        async with self._connect() as conn:
            driver = await self._driver(conn)
            bounds = [t for t in (since, until) if t is not None]
            rows = await driver.fetch(_HISTORY_BY_BOUNDS[since is not None, until is not None],
                                      account_id, from_version, hi, *bounds,
                                      timeout=self._timeout)
        return [_event_from_row(r) for r in rows]

    async def state_at(
        self, account_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> AccountState:
        """The state at a version, or at a time: up to the last version that occurred by then."""
        validate_account_id(account_id)
        check_state_at(version, at)
        if at is not None:
            q = sa.select(sa.func.max(events.c.version)).where(
                events.c.account_id == account_id, events.c.occurred_at <= at)
            async with self._connect() as conn:
                version = (await conn.execute(q)).scalar_one_or_none() or 0
                await conn.rollback()
        return await self._state_at_version(account_id, version)

    async def read_feed(self, after_position: int, limit: int) -> list[FeedEntry]:
        check_limit(limit)
        if after_position < 0:
            raise InvalidInput("after_position must be >= 0")
        async with self._connect() as conn:
            driver = await self._driver(conn)
            rows = await driver.fetch(_FEED, self._region, after_position, limit,
                                      timeout=self._timeout)
        return [FeedEntry(r[0], _event_from_row(r[1:])) for r in rows]

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
            await driver.execute(_MARK_PUBLISHED_MESSAGES, list(message_ids),
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
            return await postgres_open_reviews(driver, _event_from_row, after, limit,
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
