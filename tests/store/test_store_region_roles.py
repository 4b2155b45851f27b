"""Per-region PostgreSQL credentials (``store.region_roles``) on the test server: each region's
role opens its own database only, a process of one region pointed at another's database is
refused at start with a typed error, and the whole store works under the region's role (appends,
outbox, inbox, snapshots, retention under an anchor, erasure, an ops command) while the schema
stays out of its reach.

On a server that trusts loopback (the machine's PostgreSQL 15 via ``SAFEGUARDS_DATABASE_URL``)
passwords are not checked: what holds there is the ``CONNECT`` privilege, and the password checks
run only against the embedded PostgreSQL (``scram-sha-256`` for every role but the
administrator's)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from node_support import run_cli

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.errors import CredentialRefused, MigrationNotPermitted
from safeguards.adapters.store.event_retention import EventRetention, truncate_events
from safeguards.adapters.store.region_roles import (
    provision_region,
    region_password,
    region_role,
    region_url,
    with_region_password,
)
from safeguards.adapters.store.retention import RetentionPolicy
from safeguards.regions.nodes import run_node

from store_events import make_request, unique_region

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=400)


@dataclass(frozen=True)
class Regions:
    admin_url: str
    urls: dict[str, str]  # region -> the URL its processes connect with (no password in it)
    databases: dict[str, str]
    passwords_checked: bool  # the server asks region roles for their password


@pytest.fixture
async def two_regions(postgres_server: object) -> AsyncIterator[Regions]:
    admin_url: str = postgres_server.admin_url  # type: ignore[attr-defined]
    names = {unique_region(): f"sg_test_{uuid.uuid4().hex[:12]}" for _ in range(2)}
    urls = {region: await provision_region(admin_url, region, database)
            for region, database in names.items()}
    try:
        yield Regions(admin_url, urls, names,
                      getattr(postgres_server, "embedded", None) is not None)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            for region, database in names.items():
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await conn.execute(f'DROP ROLE IF EXISTS "{region_role(region)}"')
        finally:
            await conn.close()


def _on(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def test_a_region_role_opens_its_own_database_only(two_regions: Regions) -> None:
    us, eu = two_regions.urls
    assert "@" in two_regions.urls[us] and ":" not in urlsplit(two_regions.urls[us]).netloc.split(
        "@")[0]  # the URL a process is handed holds no password
    own = await asyncpg.connect(with_region_password(two_regions.urls[us]))
    try:
        assert await own.fetchval("SELECT current_user") == region_role(us)
        assert await own.fetchval("SELECT count(*) FROM events") == 0
    finally:
        await own.close()
    for region, other in ((us, eu), (eu, us)):  # right password, wrong database: refused
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="CONNECT"):
            await asyncpg.connect(with_region_password(
                _on(two_regions.urls[region], two_regions.databases[other])))
    if two_regions.passwords_checked:  # eu's role with us's password: refused
        bad = urlsplit(two_regions.urls[eu])
        bad = bad._replace(netloc=bad.netloc.replace("@", f":{region_password(us)}@", 1))
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(urlunsplit(bad))


async def test_a_process_on_another_regions_database_is_refused_at_start(
        two_regions: Regions) -> None:
    us, eu = two_regions.urls
    crossed = region_url(two_regions.admin_url, us, two_regions.databases[eu])
    with pytest.raises(CredentialRefused, match="permission denied for database") as refused:
        # a us node handed eu's database: refused before it touches NATS (nothing listens here)
        await run_node(us, "nats://127.0.0.1:9", crossed, None, 4)
    assert region_password(us) not in str(refused.value)
    async with PostgresEventStore(us, crossed) as store:
        with pytest.raises(CredentialRefused):
            await store.history("acct-1")


async def test_the_store_works_under_the_region_role(
        two_regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    region = next(iter(two_regions.urls))
    url = two_regions.urls[region]
    assert await migrate(url)  # a node's start: the schema is at head, nothing to change
    async with PostgresEventStore(region, url, snapshot_every=2) as store:
        await store.append(make_request("acct-a", region, 0, 6, at=OLD, inbox_key="sig-1",
                                        outbox=2))
        await store.append(make_request("acct-a", region, 6, 2, at=NOW, tag="n"))
        await store.append(make_request("acct-b", region, 0, 3, at=OLD))
        assert await store.inbox_contains("sig-1")
        pending = await store.pending_outbox(10)
        assert len(pending) == 2
        await store.mark_published([p.outbox_id for p in pending])
        assert await store.pending_outbox(10) == []
        assert len(await store.read_feed(0, 100)) == 11
        ttl = EventRetention(30 * 86400)
        assert await truncate_events(store, ttl, NOW) == {"events": 8, "accounts": 2,
                                                           "refused": 0}
        assert [e.version for e in await store.history("acct-a")] == [7, 8]
        await store.purge(RetentionPolicy(), NOW + timedelta(days=3650))
        await store.erase("acct-b", "op-1", NOW)
    async with PostgresEventStore(region, url) as fresh:  # nothing cached: from the store
        assert (await fresh.load("acct-a")).version == 8
        assert (await fresh.load("acct-b")).version == 4  # its three, then the erasure
    capsys.readouterr()
    assert await run_cli("ops", "retention", "--region", region, "--database-url", url,
                         "--event-days", "30", "--dry-run") == 0
    # acct-b's old version 3 is no longer its newest event (the erasure is): it would go now
    assert json.loads(capsys.readouterr().out)["would_remove"]["events"] == 1

    # the rows are the role's to read and write; the schema is not its to change
    raw = await asyncpg.connect(with_region_password(url))
    try:
        for statement in ("DROP TRIGGER events_append_only ON events",
                          "ALTER TABLE events ADD COLUMN x int",
                          "CREATE TABLE smuggled (x int)",
                          "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await raw.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await raw.execute("DELETE FROM events WHERE account_id = 'acct-a'")
    finally:
        await raw.close()


async def test_ops_provision_repeats_safely_and_prints_no_password(
        two_regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    region = next(iter(two_regions.urls))
    capsys.readouterr()
    assert await run_cli("ops", "provision", "--region", region, "--admin-url",
                         two_regions.admin_url, "--database",
                         two_regions.databases[region]) == 0
    out = capsys.readouterr().out
    assert region_password(region) not in out
    summary = json.loads(out)
    assert summary["database_url"] == two_regions.urls[region]
    assert summary["role"] == region_role(region) and summary["revision"] == await migrate(
        two_regions.urls[region])


async def test_a_region_role_may_not_migrate_a_schema_left_behind(two_regions: Regions) -> None:
    region = next(iter(two_regions.urls))
    admin = await asyncpg.connect(_on(two_regions.admin_url, two_regions.databases[region]))
    try:
        head = await admin.fetchval("SELECT version_num FROM alembic_version")
        await admin.execute("UPDATE alembic_version SET version_num = '0008'")  # as if behind
        with pytest.raises(MigrationNotPermitted, match="administrative credential"):
            await migrate(two_regions.urls[region])  # a node's start, under the region's role
        assert await admin.fetchval("SELECT version_num FROM alembic_version") == "0008"
        await admin.execute("UPDATE alembic_version SET version_num = $1", head)
    finally:
        await admin.close()
