"""``safeguards ops explain | rca | backtest`` through the real CLI against PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.events import EnforcementChanged
from safeguards.core.ports import AppendRequest
from safeguards.regions.command_line import main

from golden_events import GOLDEN, golden_history


@pytest.fixture
async def golden_db(fresh_database_url: str) -> str:
    await migrate(fresh_database_url)
    async with PostgresEventStore("eu", fresh_database_url) as store:
        for index in (0, 1):
            history = golden_history(index)
            await store.append(AppendRequest(history[0].account_id, 0, tuple(history)))
    return fresh_database_url


async def _cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_explain(golden_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    l3 = next(e for e in golden_history() if isinstance(e.body, EnforcementChanged)
              and e.body.level == 3)
    assert await _cli("ops", "explain", "golden-acct-1", str(l3.version), "--region", "eu",
                      "--database-url", golden_db) == 0
    out = capsys.readouterr().out
    assert "L2 -> L3" in out and "strikes that counted" in out
    assert await _cli("ops", "explain", "golden-acct-1", "2", "--region", "eu",
                      "--database-url", golden_db) == 2
    assert "not an EnforcementChanged" in capsys.readouterr().err


async def test_rca(golden_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert await _cli("ops", "rca", "golden:acct.2", "--region", "eu", "--database-url",
                      golden_db, "--out", str(out)) == 0
    page = out.read_text()
    assert "<svg" in page and "golden:acct.2" in page
    assert await _cli("ops", "rca", "nobody", "--region", "eu", "--database-url", golden_db,
                      "--out", str(out)) == 2


async def test_backtest(golden_db: str, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text((GOLDEN / "policy-default-2026.11.1.toml").read_text()
                         .replace("threshold = 0.5", "threshold = 0.99"))
    assert await _cli("ops", "backtest", "--policy", str(candidate), "--region", "eu",
                      "--database-url", golden_db) == 0
    out = capsys.readouterr().out
    assert "2 account(s) would have been treated differently" in out
    broken = tmp_path / "broken.toml"
    broken.write_text("[policy]\nversion = ''\n")
    assert await _cli("ops", "backtest", "--policy", str(broken), "--region", "eu",
                      "--database-url", golden_db) == 2
