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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from safeguards.adapters.store import erase
from safeguards.adapters.store import pg_sql as sql
from safeguards.adapters.store.bodies import BodyPacker
from safeguards.adapters.store.chain_keys import load_chain_key
from safeguards.adapters.store.pg_reads import PostgresReadSide
from safeguards.adapters.store.pg_sql import EVENT_COLUMNS
from safeguards.adapters.store.retention import RetentionPolicy, purge
from safeguards.adapters.store.sealing import DataKey, needs_key, seal_map
from safeguards.adapters.store.transactions import settled_transaction
from safeguards.adapters.store.validation import (
    DEFAULT_SNAPSHOT_EVERY,
    UnencodableBody,
    check_batch,
    check_request,
    check_text,
)
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.backtest import strike_potential
from safeguards.core.chain import GENESIS, link_values
from safeguards.core.errors import CodecError, ConcurrencyConflict
from safeguards.core.ids import validate_account_id
from safeguards.core.ports import (
    AppendRequest,
    AppendResult,
    OutboxMessage,
)
from safeguards.core.state import AccountState, fold, initial_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Written:
    results: list[AppendResult | ConcurrencyConflict]
    states: dict[str, AccountState | None]  # after the append; None where the store can't tell
    unsnapshotted: dict[str, int]  # snapshots due that need a read of the stored tail


class _EventIdTaken(Exception):
    """The fast path hit an event id that is already stored: redo the batch, checking ids."""


class PostgresEventStore(PostgresReadSide):
    """One region's event store in that region's PostgreSQL (migrated with ``migrate``): the
    reads of ``PostgresReadSide`` and the appends (group commit, feed order, snapshots)."""

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
        chain_key: bytes | None = None,
        data_key: bytes | None = None,
        seal_personal: bool = True,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        super().__init__(region, engine_or_url, statement_timeout_s=statement_timeout_s,
                         connect_timeout_s=connect_timeout_s, pool_size=pool_size,
                         data_key=data_key)
        # False only for benchmarks' baselines: personal fields then go to the store in the clear.
        self.seal_personal = seal_personal
        self._chain_key = chain_key or load_chain_key(self._region)
        self.snapshot_every = snapshot_every
        self._bodies = BodyPacker()
        # account -> (fold version, state at the version this store last appended), LRU
        self._recent: OrderedDict[str, tuple[int, AccountState]] = OrderedDict()
        self._recent_size = recent_states
        self.snapshot_failures = 0  # snapshots that could not be written after a commit

    async def __aenter__(self) -> PostgresEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- writes ---------------------------------------------------------------------------------

    async def purge(self, policy: RetentionPolicy, now: datetime, *,
                    dry_run: bool = False) -> dict[str, int]:
        """Retention (``retention``): inbox keys, published outbox rows and superseded snapshots
        past their TTL; rows removed (or that would be) per table. Events stay."""
        async with self._connect() as conn:
            driver = await self._driver(conn)
            return await purge(driver, policy, now, dry_run=dry_run,
                               statement_timeout_s=self._timeout)

    async def erase(self, account_id: str, operator: str, now: datetime) -> erase.Erasure:
        """Crypto-shred an account (``erase.py``): its data key destroyed, its snapshots dropped,
        its commands' reasons blanked and ``AccountErased`` appended, in one transaction."""
        validate_account_id(account_id)
        check_text(operator, "operator")
        async with self._connect() as conn, settled_transaction(conn):
            # The feed lock first, as every append takes it: none runs until this commits.
            await conn.execute(sql.LOCK_FEED, {"region": self._region})
            driver = await self._driver(conn)
            version, keys, snaps, rewritten = await erase.shred(
                driver, self._region, account_id, self._timeout)
            # The kept state holds the personal values: never fold the tombstone onto it.
            self.forget(account_id)
            event = erase.tombstone(account_id, self._region, version, operator, keys, now)
            (result,) = (await self._write(conn, [AppendRequest(
                account_id, version, (event,))], check_event_ids=True)).results
            if isinstance(result, ConcurrencyConflict):
                raise result
        self._sealing.forget(account_id)
        return erase.Erasure(account_id, version, version + 1, keys, snaps, rewritten)

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
                async with settled_transaction(conn):
                    written = await self._write(conn, requests, check_event_ids=False)
            except _EventIdTaken:
                # Rare: a re-decided input reused event ids (stored ones, or another request's
                # in this batch). The transaction rolled back; redo it with the ids checked, so
                # only the requests that reuse them fail.
                async with settled_transaction(conn):
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
        last = (await conn.execute(sql.LOCK_FEED, params)).scalar_one_or_none()
        if last is None:  # the region's first append: create its counter row, then lock it
            await conn.execute(sql.CREATE_FEED, params)
            last = (await conn.execute(sql.LOCK_FEED, params)).scalar_one()
        driver = await self._driver(conn)
        accounts = list(dict.fromkeys(r.account_id for r in requests))
        keys = [r.inbox_key for r in requests if r.inbox_key is not None]
        current: dict[str, int] = {}
        known_keys: set[str] = set()
        heads: dict[str, bytes] = {}  # each account's newest chain link (core.chain)
        data_keys: dict[str, DataKey] = {}  # each account's data key (sealing.py)
        for kind, key, version, head in await driver.fetch(sql.PRECHECK, accounts, keys,
                                                           timeout=self._timeout):
            if kind == 0:
                current[key] = version or 0
                heads[key] = head or GENESIS
            elif kind == 1:
                known_keys.add(key)
            else:
                data_keys[key] = self._sealing.unwrap(key, version, bytes(head))
        known_ids: set[str] = set()
        if check_event_ids:
            ids = [e.event_id for r in requests for e in r.events]
            known_ids = {row[0] for row in await driver.fetch(sql.KNOWN_EVENT_IDS, ids,
                                                               timeout=self._timeout)}

        results: list[AppendResult | ConcurrencyConflict] = []
        accepted: list[AppendRequest] = []
        inbox_keys: list[str] = []
        inbox_accounts: list[str] = []
        outbox_rows: list[OutboxMessage] = []
        new_keys: list[tuple[str, int, bytes]] = []
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
            if account not in data_keys and self.seal_personal and any(
                    needs_key(e.body) for e in request.events):
                data_keys[account], wrapped = self._sealing.new_key(account)
                new_keys.append((account, data_keys[account].generation, wrapped))
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
                    "events", records=self._rows(accepted, last, states, heads, data_keys),
                    columns=EVENT_COLUMNS, timeout=self._timeout)
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
                sql.FINISH, self._region, inbox_keys, inbox_accounts,
                [m.message_id for m in outbox_rows], [m.subject for m in outbox_rows],
                [m.payload for m in outbox_rows], position,
                [st.account_id for st in snap_states], [st.version for st in snap_states],
                fold_module.FOLD_VERSION, [codec.encode_state(st) for st in snap_states],
                [k[0] for k in new_keys], [k[1] for k in new_keys], [k[2] for k in new_keys],
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
              states: dict[str, AccountState | None],
              heads: dict[str, bytes],
              data_keys: dict[str, DataKey]) -> Iterator[tuple[Any, ...]]:
        """The COPY rows of the accepted appends, with feed positions after ``last``, personal
        fields sealed under ``data_keys`` and each event's chain link (of the sealed bytes)
        after ``heads`` (updated); each request's events are folded into ``states`` once its
        rows are out."""
        position = last
        region = self._region
        pack = self._bodies.pack  # codec.pack_body's bytes; see bodies.py
        to_map, pack_map, sealing = self._bodies.to_map, self._bodies.pack_map, self._sealing
        key = self._chain_key
        for request in accepted:
            data_key = data_keys.get(request.account_id) if self.seal_personal else None
            for e in request.events:
                position += 1
                try:
                    body = pack(e.body) if data_key is None or not needs_key(e.body) else \
                        pack_map(seal_map(sealing, e.account_id, data_key, e.body.TYPE,
                                          to_map(e.body)))
                except (TypeError, ValueError, OverflowError) as exc:
                    # Aborts the COPY, so the whole transaction: nothing of the batch is written.
                    raise UnencodableBody(e.version, exc) from None
                kind = e.body
                chained = heads[e.account_id] = link_values(
                    key, heads[e.account_id], e.account_id, e.version, e.region, e.event_id,
                    kind.TYPE, kind.SCHEMA_VERSION, e.occurred_at, e.causation_id,
                    e.correlation_id, e.policy_version, body)
                yield (e.account_id, e.version, position, region, e.event_id, kind.TYPE,
                       kind.SCHEMA_VERSION, e.occurred_at, e.causation_id, e.correlation_id,
                       e.policy_version, body, strike_potential(kind), chained)
            self._advance(states, request)

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
                    sql.INSERT_SNAPSHOTS, list(states), [s.version for s in states.values()],
                    [fold_module.FOLD_VERSION] * len(states),
                    [codec.encode_state(s) for s in states.values()], timeout=self._timeout,
                )
            self._remember(dict(states))
        except (sa_exc.SQLAlchemyError, OSError, TimeoutError, CodecError) as exc:
            # CodecError: a history this build cannot read whole (an unreadable retention base)
            self.snapshot_failures += 1
            log.warning("snapshot write failed after a committed append (%s); %d accounts",
                        type(exc).__name__, len(due))

    async def save_snapshot(self, state: AccountState) -> None:
        """Store ``state`` as the snapshot at its version (a cache; never the truth)."""
        async with self._connect() as conn, conn.begin():
            driver = await self._driver(conn)
            await driver.execute(sql.INSERT_SNAPSHOTS, [state.account_id], [state.version],
                                 [fold_module.FOLD_VERSION], [codec.encode_state(state)],
                                 timeout=self._timeout)
