"""Every operator read is audited, and signed with the reader's operator key where they hold
one: ``ops reads`` tells a registered operator's read from a name anyone could type."""

from __future__ import annotations

import json

import asyncpg
import pytest
from node_support import run_cli

from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate

from store_events import make_request, unique_region


async def test_reads_are_signed_by_registered_operators_and_checked(
        fresh_database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    add_operator(region, "ann", "viewer")
    async with PostgresEventStore(region, fresh_database_url) as store:
        await store.append(make_request("acct-r", region, 0, 2))
    common = ["--region", region, "--database-url", fresh_database_url]
    for who in ("ann", "someone-typing-a-name"):
        monkeypatch.setenv("SAFEGUARDS_OPERATOR", who)
        assert await run_cli("ops", "history", "acct-r", *common) == 0
    # a row written straight into the table, claiming ann with a made-up signature
    conn = await asyncpg.connect(fresh_database_url.replace("postgresql+asyncpg://",
                                                            "postgresql://"))
    try:
        await conn.execute("INSERT INTO operator_reads (operator, command, subject, signature) "
                           "VALUES ('ann', 'history', 'acct-r', '00:AAAA')")
    finally:
        await conn.close()
    capsys.readouterr()
    monkeypatch.setenv("SAFEGUARDS_OPERATOR", "ann")
    assert await run_cli("ops", "reads", *common, "--json") == 0
    reads = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["operator"], r["command"], r["status"]) for r in reads] == [
        ("ann", "reads", "signed"),  # newest first: this very listing is audited too
        ("ann", "history", "bad_signature"),
        ("someone-typing-a-name", "history", "unsigned"),
        ("ann", "history", "signed"),
    ]
