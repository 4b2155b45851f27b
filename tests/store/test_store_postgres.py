"""What only the PostgreSQL store can show: commit order across real connections, migrations,
and driver failures translated at the boundary."""

from __future__ import annotations

import importlib.resources
import time

import anyio
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from safeguards.adapters.embedded.ports import free_port
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.errors import SchemaMissing, translate_errors
from safeguards.adapters.store.migrate import head_revision
from safeguards.core import codec
from safeguards.core.errors import StoreUnavailable
from safeguards.core.ports import FeedEntry
from safeguards.core.state import fold, initial_state

from store_events import make_request, unique_region


async def stored_snapshots_are_folds(store: PostgresEventStore, account: str) -> list[int]:
    """Every stored snapshot equals the fold of the stored events up to its version."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.text(
            "SELECT version, state FROM snapshots WHERE account_id = :a ORDER BY version"),
            {"a": account})).all()
    history = await store.history(account)
    for version, data in rows:
        assert codec.decode_state(bytes(data)) == fold(initial_state(account, store.region),
                                                       history[:version])
    return [r[0] for r in rows]


async def test_snapshots_stay_true_when_stores_take_turns(fresh_database_url: str) -> None:
    # Two stores (two nodes) append to one account by turns: each one's kept state goes stale
    # when the other writes, and every snapshot must still be the fold of the stored events.
    await migrate(fresh_database_url)
    region = unique_region()
    async with PostgresEventStore(region, fresh_database_url, snapshot_every=5) as one, \
            PostgresEventStore(region, fresh_database_url, snapshot_every=5) as two:
        version = 0
        for i, (store, n) in enumerate([(one, 3), (two, 3), (one, 4), (one, 2), (two, 6),
                                        (two, 1), (one, 5)]):
            await store.append(make_request("A", region, version, n, tag=f"-{i}"))
            version += n
        # An append that passes a multiple of 5 snapshots the version it ends at.
        assert await stored_snapshots_are_folds(one, "A") == [6, 10, 18, 24]
        truth = fold(initial_state("A", region), await one.history("A"))
        assert await one.load("A") == truth and await two.load("A") == truth
        assert one.snapshot_failures == two.snapshot_failures == 0


async def _wait_for_lock_waiter(engine: AsyncEngine) -> None:
    """Until some backend of this database is blocked on a lock."""
    q = sa.text("SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    with anyio.fail_after(10):
        while True:
            async with engine.connect() as conn:
                if (await conn.execute(q)).scalar_one() > 0:
                    return
            await anyio.sleep(0.02)


async def test_feed_reader_never_skips_a_transaction_that_commits_late(
    pg_store: PostgresEventStore,
) -> None:
    store, region = pg_store, pg_store.region
    consumed: list[FeedEntry] = []
    b_committed = anyio.Event()

    async def reader() -> None:
        # A live tail: remembers only its cursor, as a projection or the outbox relay would.
        cursor = 0
        while len(consumed) < 5:
            batch = await store.read_feed(cursor, 100)
            consumed.extend(batch)
            if batch:
                cursor = batch[-1].position
            await anyio.sleep(0.005)

    async def writer_b() -> None:
        await store.append(make_request("B", region, 0, 3))
        b_committed.set()

    async with store.engine.connect() as conn_a:
        tx_a = await conn_a.begin()
        await store._write(conn_a, [make_request("A", region, 0, 2)], check_event_ids=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer_b)
            # B, on its own connection, reaches the feed lock while A is still open: it must
            # queue behind A instead of committing first with the later positions.
            await _wait_for_lock_waiter(store.engine)
            await anyio.sleep(0.2)
            assert not b_committed.is_set()
            assert consumed == []
            await tx_a.commit()
            with anyio.fail_after(10):
                await b_committed.wait()
    assert [(e.position, e.event.account_id, e.event.version) for e in consumed] == [
        (1, "A", 1), (2, "A", 2), (3, "B", 1), (4, "B", 2), (5, "B", 3)]


async def test_rolled_back_transaction_leaves_no_gap_in_the_feed(
    pg_store: PostgresEventStore,
) -> None:
    async with pg_store.engine.connect() as conn:
        tx = await conn.begin()
        await pg_store._write(conn, [make_request("A", pg_store.region, 0, 2)],
                              check_event_ids=False)
        await tx.rollback()
    await pg_store.append(make_request("B", pg_store.region, 0, 2))
    assert [e.position for e in await pg_store.read_feed(0, 10)] == [1, 2]
    assert await pg_store.history("A") == []


async def test_connection_lost_mid_append_writes_nothing_and_is_retryable(
    pg_store: PostgresEventStore,
) -> None:
    request = make_request("A", pg_store.region, 0, 2, inbox_key="k", outbox=1)
    with pytest.raises(StoreUnavailable) as info:
        async with pg_store.engine.connect() as conn:
            tx = await conn.begin()
            await pg_store._write(conn, [request], check_event_ids=False)
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            async with pg_store.engine.connect() as killer:
                await killer.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            with translate_errors():
                await tx.commit()
    assert info.value.retryable
    assert await pg_store.history("A") == []
    assert not await pg_store.inbox_contains("k")
    assert await pg_store.pending_outbox(10) == []
    assert (await pg_store.append(request)).version == 2  # the pool recovered; the retry lands


async def test_unreachable_server_is_store_unavailable() -> None:
    store = PostgresEventStore(unique_region(), f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                               connect_timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable):
            await store.append(make_request("A", store.region, 0, 1))
        with pytest.raises(StoreUnavailable):
            await store.load("A")
    finally:
        await store.close()


async def test_unmigrated_database_says_so(fresh_database_url: str) -> None:
    async with PostgresEventStore(unique_region(), fresh_database_url) as store:
        with pytest.raises(SchemaMissing, match="migrate"):
            await store.load("A")


async def test_migrate_is_idempotent_and_safe_to_run_concurrently(
    fresh_database_url: str,
) -> None:
    revisions: list[str] = []

    async def run() -> None:
        revisions.append(await migrate(fresh_database_url))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(run)
    revisions.append(await migrate(fresh_database_url))
    assert revisions == [head_revision()] * 4
    async with PostgresEventStore(unique_region(), fresh_database_url) as store:
        await store.append(make_request("A", store.region, 0, 1))
        async with store.engine.connect() as conn:
            tables = set((await conn.execute(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars())
    assert {"events", "snapshots", "inbox", "outbox", "feed_counter",
            "alembic_version"} <= tables


def test_migrations_ship_inside_the_package() -> None:
    root = importlib.resources.files("safeguards.adapters.store.migrations")
    assert root.joinpath("env.py").is_file()
    assert root.joinpath("script.py.mako").is_file()
    assert any(p.name.startswith("v0001") for p in root.joinpath("versions").iterdir())


async def test_a_statement_past_its_deadline_is_store_unavailable(
    fresh_database_url: str,
) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    async with PostgresEventStore(region, fresh_database_url) as holder, \
            PostgresEventStore(region, fresh_database_url, statement_timeout_s=0.5) as hasty:
        await holder.append(make_request("A", region, 0, 1))
        async with holder.engine.connect() as conn:
            tx = await conn.begin()
            await holder._write(conn, [make_request("A", region, 1, 1)], check_event_ids=False)
            with anyio.fail_after(10), pytest.raises(StoreUnavailable) as info:
                await hasty.append(make_request("B", region, 0, 1))  # waits on the feed lock
            assert info.value.retryable
            await tx.rollback()
        assert (await hasty.append(make_request("B", region, 0, 1))).version == 1
        assert [e.position for e in await hasty.read_feed(0, 10)] == [1, 2]


async def test_appends_cancelled_at_any_point_land_whole_or_not_at_all(
    pg_store: PostgresEventStore,
) -> None:
    # Cancel appends after ever longer delays, so that some die in every phase (checkout, lock,
    # pre-check, COPY, finish, commit). Afterwards each one has landed whole or not at all, the
    # feed is dense, and the store still works.
    region = pg_store.region
    version = 0
    outcomes = []
    for step in range(40):
        request = make_request("A", region, version, 3, inbox_key=f"k{step}", outbox=1,
                               tag=f"-{step}")
        with anyio.move_on_after(step * 0.0005):
            await pg_store.append(request)
        history = await pg_store.history("A")
        landed = len(history) > version
        if landed:
            assert [e.event_id for e in history[version:]] == [e.event_id for e in request.events]
            version += 3
        assert len(history) == version
        assert await pg_store.inbox_contains(f"k{step}") == landed
        outcomes.append(landed)
    assert any(outcomes) and not all(outcomes)
    feed = await pg_store.read_feed(0, 1000)
    assert [e.position for e in feed] == list(range(1, version + 1))
    assert len(await pg_store.pending_outbox(1000)) == version // 3
    assert await stored_snapshots_are_folds(pg_store, "A") is not None
    assert (await pg_store.append(make_request("A", region, version, 1, tag="-end"))).version \
        == version + 1


async def test_an_append_cancelled_while_its_commit_is_on_the_wire_is_settled_first(
    pg_store: PostgresEventStore, fresh_database_url: str,
) -> None:
    """A commit that takes a while (a deferred trigger sleeps in it) is cancelled half-way:
    the append lands, and the caller's very next read (another connection) already sees it,
    rather than seeing it missing and then, a moment later, present."""
    region = pg_store.region
    await pg_store.append(make_request("A", region, 0, 1, tag="-first"))
    admin = await asyncpg.connect(fresh_database_url.replace("+asyncpg", ""))
    try:
        await admin.execute("""
            CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON events
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();""")
        request = make_request("A", region, 1, 1, inbox_key="k-slow", tag="-slow")
        started = time.perf_counter()
        with anyio.move_on_after(0.15) as scope:
            await pg_store.append(request)
        assert scope.cancelled_caught  # the caller was cancelled ...
        assert time.perf_counter() - started >= 0.35  # ... once the commit had settled
        history = await pg_store.history("A")
        assert [e.event_id for e in history[1:]] == [e.event_id for e in request.events]
        assert await pg_store.inbox_contains("k-slow")
        await admin.execute("DROP TRIGGER slow_commit ON events")
    finally:
        await admin.close()
    assert (await pg_store.append(make_request("A", region, 2, 1, tag="-end"))).version == 3


async def test_a_connection_left_mid_operation_is_retryable_and_never_reused(
    pg_store: PostgresEventStore,
) -> None:
    """A call cancelled by its deadline while the server restarts can leave the driver's
    connection mid-operation; the next use fails with asyncpg's InternalClientError. That is a
    retryable outage, and the connection is dropped, not returned to the pool."""
    with pytest.raises(StoreUnavailable) as info:
        async with pg_store._connect() as conn:
            first = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            raise asyncpg.InternalClientError(
                "cannot switch to state 11; another operation (2) is in progress")
    assert info.value.retryable
    async with pg_store._connect() as conn:
        again = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    assert again != first
