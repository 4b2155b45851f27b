"""The event store contract runs against every backend: ``store`` is parametrised over them.

- ``memory``: InMemoryEventStore.
- ``postgres``: PostgresEventStore on a fresh database of the test PostgreSQL server (embedded
  PostgreSQL 18, or the server ``SAFEGUARDS_DATABASE_URL`` names, e.g. the machine's 15).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore, migrate

from store_events import SNAPSHOT_EVERY, StoreUnderTest, create_database, unique_region


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StoreUnderTest]:
    region = unique_region()
    if request.param == "memory":
        yield InMemoryEventStore(region, snapshot_every=SNAPSHOT_EVERY)
        return
    # fresh_database_url is async, and an async fixture cannot ask for one by name; this does
    # what it does on the same session server.
    server = request.getfixturevalue("postgres_server")
    url = await create_database(server.admin_url)
    await migrate(url)
    pg = PostgresEventStore(region, url, snapshot_every=SNAPSHOT_EVERY)
    try:
        yield pg
    finally:
        await pg.close()


@pytest.fixture
async def pg_store(fresh_database_url: str) -> AsyncIterator[PostgresEventStore]:
    await migrate(fresh_database_url)
    pg = PostgresEventStore(unique_region(), fresh_database_url, snapshot_every=SNAPSHOT_EVERY)
    try:
        yield pg
    finally:
        await pg.close()
