"""One /metrics for a multi-worker proxy: requests served by two worker processes add up in a
single scrape of either, and the run's metrics directory is gone once the proxy stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest
from csp_testkit import Region

from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port


def _spawn(args: list[str], log: Path, tmp: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)})


def _samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples in an exposition: the label part (or "") -> value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            found[series[len(name):]] = float(value)
    return found


def _metrics_dirs(tmp: Path) -> list[Path]:
    return [p for p in tmp.iterdir() if p.name.startswith("safeguards-proxy-metrics-")]


@pytest.mark.slow
async def test_two_workers_requests_add_up_in_one_scrape(region: Region, nats_url: str,
                                                         tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    up_port, port = free_port(), free_port()
    procs = [_spawn(["upstream", "--port", str(up_port)], tmp_path / "upstream.log", tmp),
             _spawn(["proxy", "--region", region.name, "--upstream",
                     f"http://127.0.0.1:{up_port}", "--nats", nats_url, "--port", str(port),
                     "--caller-auth", "loopback", "--workers", "2"],
                    tmp_path / "proxy.log", tmp)]
    try:
        wait_for_port("127.0.0.1", up_port, 30)
        wait_for_port("127.0.0.1", port, 60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url) as probe:
            while (await probe.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline
        assert len(_metrics_dirs(tmp)) == 1
        body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        served: Counter[int] = Counter()
        deadline = time.monotonic() + 30
        while (len(served) < 2 or sum(served.values()) < 8) and time.monotonic() < deadline:
            # one connection per client (the kernel spreads them): /healthz names its worker
            async with httpx.AsyncClient(base_url=url) as client:
                pid = (await client.get("/healthz")).json()["pid"]
                answer = await client.post("/v1/messages", json=body,
                                           headers={"x-csp-account-id": f"acct-{len(served)}"})
                assert answer.status_code == 200
                served[pid] += 1
        assert len(served) == 2, served  # both workers served requests
        total = sum(served.values())

        # Either worker's scrape counts every request: checks at once (the library's files),
        # decisions once the other worker has published (each second)
        deadline = time.monotonic() + 10
        while True:
            async with httpx.AsyncClient(base_url=url) as client:
                text = (await client.get("/metrics")).text
            checks = _samples(text, "safeguards_csp_check_seconds_count")
            decisions = _samples(text, "safeguards_csp_decisions_total")
            assert sum(checks.values()) == total, text
            assert sum(decisions.values()) <= total
            if sum(decisions.values()) == total or time.monotonic() > deadline:
                break
            await anyio.sleep(0.2)
        assert sum(decisions.values()) == total, text
        # gauges merged by their mode: one series, not one per worker
        assert list(_samples(text, "safeguards_csp_cache_accounts")) == [""]
        assert list(_samples(text, "safeguards_csp_telemetry_queued")) == [""]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    assert procs[1].returncode == 0, (tmp_path / "proxy.log").read_text()
    assert _metrics_dirs(tmp) == []  # the run's metrics directory removed at stop
