"""The tamper-evident record: both stores chain every event under the region's key; a changed,
missing or re-keyed history is found at its first broken version, and PostgreSQL refuses to
change or remove an event in place."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Protocol

import asyncpg
import pytest
from node_support import run_cli

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.chain_keys import load_chain_key
from safeguards.core.chain import verify

from store_events import StoreUnderTest, create_database, make_request, unique_region


async def _fill(store: StoreUnderTest, account: str) -> None:
    version = 0
    for n in (1, 3, 1, 5, 2):  # single and multi-event appends
        await store.append(make_request(account, store.region, version, n))
        version += n
    await store.append_batch([make_request("acct-other", store.region, 0, 2),
                              make_request(account, store.region, version, 2)])


async def test_every_event_is_chained_and_verifies(store: StoreUnderTest) -> None:
    await _fill(store, "acct-c")
    rows = await store.chain("acct-c")
    key = load_chain_key(store.region)
    assert [r.version for r in rows] == list(range(1, 15))
    assert all(r.chain is not None for r in rows)
    report = verify(key, "acct-c", rows)
    assert report.first_break is None and report.events == 14 and report.unchained == 0
    assert verify(key, "acct-other", await store.chain("acct-other")).first_break is None
    assert await store.chain("acct-none") == []

    assert verify(b"k" * 32, "acct-c", rows).first_break == 1  # not this region's key
    changed = list(rows)
    changed[6] = replace(rows[6], body=rows[6].body + b"\x00")
    assert verify(key, "acct-c", changed).first_break == 7
    assert verify(key, "acct-c", rows[:4] + rows[5:]).first_break == 5  # one removed


class PostgresServer(Protocol):
    admin_url: str


async def test_postgres_refuses_changes_in_place_and_a_bypass_is_found(
        postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = await create_database(postgres_server.admin_url)
    await migrate(url)
    region = unique_region()
    verify_cli = ["ops", "verify", "--region", region, "--database-url", url]
    async with PostgresEventStore(region, url) as store:
        await _fill(store, "acct-t")
        assert await run_cli(*verify_cli, "--all") == 0
        raw = url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(raw)
        try:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("UPDATE events SET body = body || '\\x00'::bytea "
                                   "WHERE account_id = 'acct-t' AND version = 5")
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM events WHERE account_id = 'acct-t'")
            # someone who can switch the trigger off (a superuser) edits an event anyway
            await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
            await conn.execute("UPDATE events SET correlation_id = 'edited' "
                               "WHERE account_id = 'acct-t' AND version = 5")
            await conn.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
        finally:
            await conn.close()
        report = verify(load_chain_key(region), "acct-t", await store.chain("acct-t"))
        assert report.first_break == 5 and "changed" in report.why
    capsys.readouterr()
    assert await run_cli(*verify_cli, "--all") == 1
    out = capsys.readouterr().out
    assert "acct-t: BROKEN at version 5" in out and "acct-other: ok (2 events" in out
    # every operator read is recorded, append-only, before it happens
    os.environ["SAFEGUARDS_OPERATOR"] = "alice"
    try:
        assert await run_cli("ops", "history", "acct-t", "--region", region,
                             "--database-url", url) == 0
    finally:
        del os.environ["SAFEGUARDS_OPERATOR"]
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        reads = await conn.fetch("SELECT operator, command, subject FROM operator_reads "
                                 "ORDER BY id")
        assert [tuple(r)[1:] for r in reads] == [("verify", f"region:{region}")] * 2 + [
            ("history", "acct-t")]
        assert reads[-1]["operator"] == "alice"
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM operator_reads")
    finally:
        await conn.close()


async def test_a_rotated_key_chains_new_events_and_the_old_ones_still_verify(
        postgres_server: PostgresServer) -> None:
    url = await create_database(postgres_server.admin_url)
    await migrate(url)
    region = unique_region()
    old, new = os.urandom(32), os.urandom(32)
    async with PostgresEventStore(region, url, chain_key=old) as before:
        await before.append(make_request("acct-r", region, 0, 3))
    async with PostgresEventStore(region, url, chain_key=new) as after:  # rotated
        await after.append(make_request("acct-r", region, 3, 2))
        rows = await after.chain("acct-r")
    assert verify([new, old], "acct-r", rows).first_break is None
    assert verify([new], "acct-r", rows).first_break == 1  # the old key is still needed
    assert verify([old], "acct-r", rows).first_break == 4  # and the new one from its first


def test_the_chain_keys_rotate_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from safeguards.adapters.store.chain_keys import load_chain_keys

    monkeypatch.setenv("SAFEGUARDS_CHAIN_KEYS_ROT", f"c-new:{'ab' * 32},c-old:{'cd' * 32}")
    assert load_chain_keys("rot") == [bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32)]
    assert load_chain_key("rot") == bytes.fromhex("ab" * 32)
