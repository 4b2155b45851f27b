"""``safeguards ops history`` and ``ops state-at`` through the console entry point, on a real
PostgreSQL store."""

from __future__ import annotations

import json
from datetime import timedelta

import anyio
import pytest

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.state import fold, initial_state
from safeguards.regions.command_line import main

from store_events import T0, make_request, unique_region

ACCOUNT = "acct-ops-1"


async def _seeded(url: str) -> str:
    await migrate(url)
    region = unique_region()
    async with PostgresEventStore(region, url) as store:
        await store.append(make_request(ACCOUNT, region, 0, 4))
        await store.append(make_request(ACCOUNT, region, 4, 6))  # v5 and v10 change the level
    return region


async def _cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_history_prints_the_timeline(fresh_database_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    region = await _seeded(fresh_database_url)
    assert await _cli("ops", "history", ACCOUNT, "--region", region,
                      "--database-url", fresh_database_url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"account {ACCOUNT} (region {region}): 10 events, versions 1..10"
    assert out[1].split() == ["VER", "TIME", "TYPE", "LEVEL", "REASON", "RULE", "POLICY",
                              "DETAIL"]
    rows = out[2:]
    assert [r.split()[0] for r in rows] == [str(v) for v in range(1, 11)]
    assert rows[4].split()[:4] == ["5", "2026-11-01T12:00:05Z", "EnforcementChanged", "L0->L1"]
    assert "risk over threshold" in rows[4] and "ladder.l1" in rows[4] and "2026.11.1" in rows[4]
    assert "StrikeRecorded" in rows[2] and "cyber.strike" in rows[2]
    assert "cyber 0.90" in rows[1]


async def test_history_ranges_and_json(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    region = await _seeded(fresh_database_url)
    # The URL from the region's environment variable, as the help says.
    monkeypatch.setenv(f"SAFEGUARDS_DATABASE_URL_{region.upper()}", fresh_database_url)
    assert await _cli("ops", "history", ACCOUNT, "--region", region, "--from-version", "3",
                      "--to-version", "8", "--since", "2026-11-01T12:00:04Z", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["account"], out["region"], out["retention"]) == (ACCOUNT, region, None)
    rows = out["events"]
    assert [r["version"] for r in rows] == [4, 5, 6, 7, 8]
    change = rows[1]
    assert change["type"] == "EnforcementChanged" and change["level"] == "L0->L1"
    assert change["reason"] == "risk over threshold" and change["rule"] == "ladder.l1"
    assert change["policy_version"] == "2026.11.1"
    assert change["body"]["previous_level"] == 0 and change["body"]["level"] == 1
    assert change["event_id"] == f"{ACCOUNT}/5"


async def test_state_at_version_and_time(fresh_database_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    region = await _seeded(fresh_database_url)
    async with PostgresEventStore(region, fresh_database_url) as store:
        events = await store.history(ACCOUNT)
    expected = fold(initial_state(ACCOUNT, region), events[:7])
    base = ["ops", "state-at", ACCOUNT, "--region", region, "--database-url", fresh_database_url]
    assert await _cli(*base, "--at", "7", "--json") == 0
    by_version = json.loads(capsys.readouterr().out)
    assert by_version["version"] == 7 and by_version["level"] == expected.level == 1
    assert by_version["strikes"] == expected.strikes
    at = (T0 + timedelta(seconds=7, milliseconds=300)).isoformat()
    assert await _cli(*base, "--at", at, "--json") == 0
    assert json.loads(capsys.readouterr().out) == by_version
    assert await _cli(*base, "--at", "7") == 0
    text = capsys.readouterr().out
    assert f"state of {ACCOUNT} as of version 7:" in text
    assert "level                 L1" in text and "risk cyber" in text


async def test_errors_are_readable(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SAFEGUARDS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SAFEGUARDS_DATABASE_URL_ZZ", raising=False)
    assert await _cli("ops", "history", ACCOUNT, "--region", "zz") == 2
    assert "SAFEGUARDS_DATABASE_URL_ZZ" in capsys.readouterr().err
    assert await _cli("ops", "history", "bad id", "--region", "zz",
                      "--database-url", fresh_database_url) == 2
    assert "account id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        await _cli("ops", "state-at", ACCOUNT, "--region", "zz", "--at", "2026-11-01T12:00:00")
    assert "no zone" in capsys.readouterr().err
    # An unmigrated database says so instead of failing with a driver error.
    assert await _cli("ops", "history", ACCOUNT, "--region", "zz",
                      "--database-url", fresh_database_url) == 1
    assert "migrate" in capsys.readouterr().err
