"""Event retention against PostgreSQL: events past the TTL go behind a chain anchor once a
snapshot holds what they fold to; every state loads as before, the kept events verify from the
anchor, appends continue, an account's newest event always stays, and nothing else can delete
an event or forge an anchor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from node_support import run_cli

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.chain_keys import load_chain_keys
from safeguards.adapters.store.event_retention import (
    EventRetention,
    chain_anchor,
    truncate_events,
)
from safeguards.adapters.store.retention import RetentionPolicy
from safeguards.core.chain import verify
from safeguards.core.errors import InvalidInput

from store_events import make_request, unique_region

NOW = datetime.now(UTC).replace(microsecond=0)
OLD, FRESH = NOW - timedelta(days=400), NOW - timedelta(days=1)
TTL = EventRetention(30 * 86400)


def _raw_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_events_past_the_ttl_go_behind_an_anchor_and_every_state_stays(
        fresh_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    keys = load_chain_keys(region)
    async with PostgresEventStore(region, fresh_database_url, snapshot_every=1000) as store:
        await store.append(make_request("acct-a", region, 0, 10, at=OLD))  # old, then fresh
        await store.append(make_request("acct-a", region, 10, 3, at=FRESH, tag="f"))
        await store.append(make_request("acct-b", region, 0, 4, at=OLD))  # all old
        await store.append(make_request("acct-c", region, 0, 1, at=OLD))  # one event: stays
        before = {a: await store.load(a) for a in ("acct-a", "acct-b", "acct-c")}

        assert await truncate_events(store, TTL, NOW, dry_run=True) == {
            "events": 13, "accounts": 2, "refused": 0}
        assert len(await store.history("acct-a")) == 13  # a dry run removes nothing
        assert await truncate_events(store, TTL, NOW) == {"events": 13, "accounts": 2,
                                                           "refused": 0}
        assert await truncate_events(store, TTL, NOW) == {"events": 0, "accounts": 0,
                                                           "refused": 0}

        # the kept events: acct-a's fresh ones, acct-b's newest, acct-c untouched
        assert [e.version for e in await store.history("acct-a")] == [11, 12, 13]
        assert [e.version for e in await store.history("acct-b")] == [4]
        assert [e.version for e in await store.history("acct-c")] == [1]
        for account in ("acct-a", "acct-b", "acct-c"):
            anchor = await chain_anchor(store, account)
            report = verify(keys, account, await store.chain(account), anchor)
            assert report.first_break is None, report
        assert (await chain_anchor(store, "acct-b") or pytest.fail()).events_removed == 3
        assert await chain_anchor(store, "acct-c") is None

        # appends continue the version and the chain after a truncation
        await store.append(make_request("acct-b", region, 4, 2, at=NOW, tag="n"))
        report = verify(keys, "acct-b", await store.chain("acct-b"),
                        await chain_anchor(store, "acct-b"))
        assert report.first_break is None and report.retained_from == 4
        # a purge of superseded snapshots keeps each anchor's state
        await store.purge(RetentionPolicy(), NOW + timedelta(days=3650))
        # erasing a truncated account keeps its anchor's state, scrubbed of personal values
        level = (await store.load("acct-b")).level
        await store.erase("acct-b", "op-1", NOW)
    async with PostgresEventStore(region, fresh_database_url) as fresh:  # nothing cached
        for account in ("acct-a", "acct-c"):
            assert await fresh.load(account) == before[account]
        erased = await fresh.load("acct-b")
        assert erased.version == 7 and erased.links == () and erased.level == level

    raw = await asyncpg.connect(_raw_url(fresh_database_url))
    try:
        # nothing else deletes an event: not without the setting, not past an anchor
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute("DELETE FROM events WHERE account_id = 'acct-c'")
        async with raw.transaction():
            await raw.execute("SELECT set_config('safeguards.truncating', 'on', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await raw.execute("DELETE FROM events WHERE account_id = 'acct-a' "
                                  "AND version = 11")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # anchors only move forward
            await raw.execute("UPDATE event_anchors SET retained_from = 2 "
                              "WHERE account_id = 'acct-a'")
        # an anchor written without the region's chain key does not verify
        await raw.execute("UPDATE event_anchors SET retained_from = 12, mac = '\\x00'::bytea "
                          "WHERE account_id = 'acct-a'")
    finally:
        await raw.close()
    async with PostgresEventStore(region, fresh_database_url) as store:
        report = verify(keys, "acct-a", await store.chain("acct-a"),
                        await chain_anchor(store, "acct-a"))
        assert report.first_break == 12 and "anchor" in report.why
    capsys.readouterr()
    assert await run_cli("ops", "retention", "--region", region, "--database-url",
                         fresh_database_url, "--event-days", "30", "--dry-run") == 1
    # acct-b's old version 4 is no longer its newest event: it would go now; the forged anchor
    # names a retention base (version 11) that was never written: acct-a is unreadable (alarm)
    report = json.loads(capsys.readouterr().out)
    assert report["would_remove"] == {
        "events": 1, "event_accounts": 1, "inbox": 0, "outbox": 0, "snapshots": 0}
    assert report["retention_bases"]["unreadable_accounts"] == ["acct-a"]


def test_an_event_ttl_below_a_month_is_refused() -> None:
    with pytest.raises(InvalidInput, match="event TTL"):
        EventRetention(7 * 86400)
