"""A database holds one region: the first store to open it claims it (its region marker), a
store of another region refuses to read or write there, and nobody rewrites the claim."""

from __future__ import annotations

import asyncpg
import pytest

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.errors import ResidencyViolation, WrongRegionDatabase

from store_events import make_request, unique_region


async def test_a_store_of_another_region_refuses_the_database(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    home, other = unique_region(), unique_region()
    async with PostgresEventStore(home, fresh_database_url) as store:
        await store.append(make_request("A", home, 0, 2))
    async with PostgresEventStore(other, fresh_database_url) as foreign:
        with pytest.raises(WrongRegionDatabase, match=repr(home)):
            await foreign.append(make_request("B", other, 0, 1))
        with pytest.raises(WrongRegionDatabase):  # nor read what it holds
            await foreign.history("A")
    async with PostgresEventStore(home, fresh_database_url) as again:  # its own region still can
        assert len(await again.history("A")) == 2
        # and an event of another region is refused by the store itself (its residency guard)
        with pytest.raises(ResidencyViolation):
            await again.append(make_request("C", other, 0, 1))


async def test_the_claim_cannot_be_rewritten(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    async with PostgresEventStore(region, fresh_database_url) as store:
        assert await store.history("nobody") == []  # the first use claims the database
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await conn.fetchval("SELECT region FROM region_marker") == region
        for statement in ("UPDATE region_marker SET region = 'eu'", "DELETE FROM region_marker"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO region_marker (region) VALUES ('eu')")
    finally:
        await conn.close()
