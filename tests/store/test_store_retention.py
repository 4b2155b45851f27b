"""Retention removes inbox keys, published outbox rows and superseded snapshots past their TTL,
and nothing that would change a decision: no unpublished message, no subject's newest command,
no account's newest snapshot, no event; every state folds as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import pytest
from node_support import run_cli

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.retention import RetentionPolicy
from safeguards.core.errors import InvalidInput
from safeguards.core.state import fold, initial_state

from store_events import make_request, unique_region


async def test_retention_keeps_what_decisions_need(fresh_database_url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    async with PostgresEventStore(region, fresh_database_url, snapshot_every=2) as store:
        version = 0
        for i in range(6):  # six appends, each with an inbox key and one enforcement message
            await store.append(make_request("acct-k", region, version, 2,
                                            inbox_key=f"in-{i}", outbox=1, tag=f"-{i}"))
            version += 2
        before = await store.load("acct-k")
        raw = await asyncpg.connect(fresh_database_url.replace("postgresql+asyncpg://",
                                                               "postgresql://"))
        try:
            # everything old; all but the newest outbox row published long ago
            await raw.execute("UPDATE inbox SET recorded_at = now() - interval '40 days' "
                              "WHERE inbox_key <> 'in-5'")
            await raw.execute("UPDATE outbox SET published_at = now() - interval '10 days' "
                              "WHERE id < (SELECT max(id) - 1 FROM outbox)")
            await raw.execute("UPDATE snapshots SET created_at = now() - interval '10 days'")
            snapshots = await raw.fetchval("SELECT count(*) FROM snapshots")
            policy = RetentionPolicy()
            now = datetime.now(UTC)
            counted = await store.purge(policy, now, dry_run=True)
            assert counted == {"inbox": 5, "outbox": 4, "snapshots": snapshots - 1}
            assert await raw.fetchval("SELECT count(*) FROM inbox") == 6  # a dry run removes none
            assert await store.purge(policy, now) == counted
            assert await raw.fetchval("SELECT count(*) FROM snapshots") == 1
            outbox = await raw.fetch("SELECT published_at FROM outbox ORDER BY id")
            assert len(outbox) == 2 and outbox[-1]["published_at"] is None  # unpublished kept
            assert await raw.fetchval("SELECT count(*) FROM events") == 12  # events stay
        finally:
            await raw.close()
        assert await store.inbox_contains("in-5") and not await store.inbox_contains("in-0")
        history = await store.history("acct-k")
        assert await store.load("acct-k") == before == fold(initial_state("acct-k", region),
                                                             history)
    async with PostgresEventStore(region, fresh_database_url) as fresh:  # nothing cached
        assert await fresh.load("acct-k") == before
    capsys.readouterr()
    assert await run_cli("ops", "retention", "--region", region, "--database-url",
                         fresh_database_url, "--dry-run") == 0
    assert json.loads(capsys.readouterr().out) == {
        "dry_run": True, "would_remove": {"inbox": 0, "outbox": 0, "snapshots": 0},
        "retention_bases": {"other_fold": 0, "unreadable": 0, "unreadable_accounts": []}}


def test_ttls_below_their_floors_are_refused() -> None:
    with pytest.raises(InvalidInput, match="inbox"):
        RetentionPolicy(inbox_ttl_s=86400)  # redeliveries could be decided twice
    with pytest.raises(InvalidInput, match="outbox"):
        RetentionPolicy(outbox_ttl_s=0)
