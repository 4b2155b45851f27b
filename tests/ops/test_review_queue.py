"""The review queue end to end: scores push an account past the automatic limit on a real node
(NATS + PostgreSQL), ``ops queue list`` shows it, ``claim`` and ``decide`` reach its actor and
land in the history, and the decided account leaves the queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from node_support import run_cli, running_node

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.events import (
    EnforcementChanged,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
)

from bus_support import publish_signals, wait_until
from strategies import score_signal

P = 4
ACCOUNT = "acct:review-1"


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while True:
            if await check():
                return
            await anyio.sleep(0.1)


async def _queue(capsys: pytest.CaptureFixture[str], *common: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert await run_cli("ops", "queue", "list", *common, "--json") == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


async def test_queue_list_claim_and_decide_through_a_node(
        nats_url: str, fresh_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = "t" + uuid.uuid4().hex[:8]
    store = PostgresEventStore(region, fresh_database_url)
    db = ["--region", region, "--database-url", fresh_database_url]
    bus = ["--region", region, "--nats", nats_url, "--partitions", str(P)]
    now = datetime.now(UTC)
    signals = [score_signal(i, ACCOUNT, now + timedelta(seconds=i), (("jailbreak", 0.95),),
                            region=region) for i in range(8)]

    async def reviewed() -> bool:
        return bool(await store.open_reviews())

    try:
        async with running_node(nats_url, region, store, P) as (levels, nc):
            await publish_signals(nc.jetstream(), region, P, signals)
            await _eventually(reviewed)

            (row,) = await _queue(capsys, *db)
            assert row["account"] == ACCOUNT and row["level"] == 3
            assert row["proposed_level"] == 4 and row["rule"] == "escalate.review"
            assert row["claimed_by"] is None
            assert await run_cli("ops", "queue", "list", *db) == 0
            table = capsys.readouterr().out.splitlines()
            assert table[0].split()[:3] == ["ACCOUNT", "LEVEL", "PROPOSED"]
            assert table[1].split()[:4] == [ACCOUNT, "L3", "L4", row["requested_at"]]

            assert await run_cli("ops", "queue", "claim", ACCOUNT, *bus,
                                 "--operator", "alice") == 0

            async def claimed() -> bool:
                reviews = await store.open_reviews()
                return bool(reviews) and reviews[0].claimed_by == "alice"

            await _eventually(claimed)
            (row,) = await _queue(capsys, *db)
            assert row["claimed_by"] == "alice"

            assert await run_cli("ops", "queue", "decide", ACCOUNT, *bus, "--level", "4",
                                 "--operator", "alice", "--reason", "case 4411") == 0

            async def decided() -> bool:
                return not await store.open_reviews()

            await _eventually(decided)
            assert await _queue(capsys, *db) == []
            await wait_until(lambda: 4 in levels)
    finally:
        await store.close()

    async with PostgresEventStore(region, fresh_database_url) as reader:
        history = await reader.history(ACCOUNT)
        state = await reader.load(ACCOUNT)
    kinds = [type(e.body) for e in history]
    assert kinds.count(ReviewRequested) == 1
    assert kinds.index(ReviewRequested) < kinds.index(ReviewClaimed) \
        < kinds.index(OperatorActionTaken)
    changes = [e.body for e in history if isinstance(e.body, EnforcementChanged)]
    assert [c.level for c in changes] == [1, 2, 3, 4]
    assert changes[-1].rule_id == "operator.set_level"
    assert changes[-1].reason == "operator alice: case 4411"
    assert state.level == 4 and state.review_level == 0


async def test_an_empty_queue_says_so(fresh_database_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    assert await run_cli("ops", "queue", "list", "--region", "eu",
                         "--database-url", fresh_database_url) == 0
    assert capsys.readouterr().out.strip() == "no open reviews in region eu"

