"""The proxy on several worker processes: one port (SO_REUSEPORT), enforcement read by every
worker from the feed, and an account's rate-limit quota shared, not multiplied by workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import httpx
import pytest
from csp_testkit import Region
from rates_worker import spend

from safeguards.adapters.csp.shared_rates import SharedRates
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port
from safeguards.core.policy import default_policy_text


def test_workers_share_one_quota() -> None:
    """Three processes spend one account's 10-a-minute quota at once: ten pass in all."""
    rates = SharedRates.create(slots=64, stripes=4)
    context = get_context("spawn")
    out = context.Queue()
    try:
        workers = [context.Process(target=spend, args=(rates.handle(), "acct-1", 10, out))
                   for _ in range(3)]
        for worker in workers:
            worker.start()
        passed = [out.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(10)
        assert sum(passed) == 10
        # another account is untouched; a token debt throttles until it is paid
        now = time.time()
        assert rates.take("acct-2", now, 6.0) is None
        rates.charge("acct-2", now, 90.0)
        throttled = rates.take("acct-2", now, 6.0)
        assert throttled is not None and throttled[0] == "rate_tokens"
        assert throttled[1] == pytest.approx(30.0)
    finally:
        rates.close()


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
async def test_a_multi_worker_proxy_enforces_once(region: Region, nats_url: str,
                                                  tmp_path: Path) -> None:
    # the default tier at 6 requests a minute, so the shared quota shows with a few requests
    policy = tmp_path / "policy.toml"
    text = default_policy_text()
    tier = "[rate_tiers.0]\nrequests_per_minute = 600"
    assert tier in text
    policy.write_text(text.replace(tier, "[rate_tiers.0]\nrequests_per_minute = 6"))
    up_port, port = free_port(), free_port()
    procs = [_spawn(["upstream", "--port", str(up_port)], tmp_path / "upstream.log"),
             _spawn(["proxy", "--region", region.name, "--upstream",
                     f"http://127.0.0.1:{up_port}", "--nats", nats_url, "--port", str(port),
                     "--caller-auth", "loopback", "--policy", str(policy), "--workers", "3"],
                    tmp_path / "proxy.log")]
    try:
        wait_for_port("127.0.0.1", up_port, 30)
        wait_for_port("127.0.0.1", port, 60)
        url = f"http://127.0.0.1:{port}"
        body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url) as probe:
            while (await probe.get("/readyz")).status_code != 200:  # each worker synced
                assert time.monotonic() < deadline
        await region.enforce("acct-blocked", 4, 1)
        statuses: list[int] = []
        blocked: list[int] = []
        for _ in range(12):  # a new connection each: the kernel spreads them over workers
            async with httpx.AsyncClient(base_url=url) as client:
                answer = await client.post("/v1/messages", json=body,
                                           headers={"x-csp-account-id": "acct-quota"})
                statuses.append(answer.status_code)
        assert statuses.count(200) == 6 and statuses.count(429) == 6
        deadline = time.monotonic() + 10
        while len(blocked) < 9 and time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=url) as client:
                answer = await client.post("/v1/messages", json=body,
                                           headers={"x-csp-account-id": "acct-blocked"})
            if answer.status_code == 403 or blocked:  # once refused, by every worker
                blocked.append(answer.status_code)
        assert blocked == [403] * 9
        workers: set[int] = set()
        for _ in range(30):
            async with httpx.AsyncClient(base_url=url) as client:
                workers.add((await client.get("/healthz")).json()["pid"])
        assert len(workers) > 1  # the kernel spread the connections over the workers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    assert procs[1].returncode == 0, (tmp_path / "proxy.log").read_text()
