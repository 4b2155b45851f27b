"""Proxy benchmark: latency the proxy adds over calling the upstream stand-in directly.

    python benchmarks/proxy.py [--requests 400] [--nats URL]

The upstream stand-in and the proxy each run in their own process (``safeguards upstream`` and
``safeguards proxy``, on uvloop); NATS is an embedded server unless ``--nats`` names one. The
load generator (this process) sends non-streaming Messages requests over keep-alive connections
at 1, 16 and 64 concurrent clients (each client's first three requests, which open the
connections, are not timed), first straight to the upstream and then through the proxy, and
compares latency quantiles. Streaming: time to the first ``content_block_delta`` byte, direct
vs proxied, at 1 client. The last line is JSON with the worst figure over the concurrency levels:
``{"added_p50_ms", "added_p99_ms", "ttft_added_p50_ms", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from safeguards.adapters.embedded import EmbeddedNats, free_port
from safeguards.adapters.embedded.ports import wait_for_port

BODY = json.dumps({"model": "claude-bench", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Say something short."}]}).encode()
STREAM_BODY = json.dumps({"model": "claude-bench", "max_tokens": 64, "stream": True,
                          "messages": [{"role": "user", "content": "Stream something."}]}).encode()
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01",
           "x-api-key": "bench"}
_counter = iter(range(10**9))


def headers() -> dict[str, str]:
    """Each request from its own account, so tier 0's 600 requests/minute never bind."""
    return {**HEADERS, "x-csp-account-id": f"bench-{next(_counter) % 50_000}"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (a noise-robust cost measure)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def load(url: str, concurrency: int, total: int) -> list[float]:
    """Latency (s) of ``total`` requests issued by ``concurrency`` clients."""
    samples: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        per_client = max(1, total // concurrency)

        async def one_client() -> None:
            for _ in range(3):  # connections (client->proxy->upstream) open before we time
                await client.post("/v1/messages", content=BODY, headers=headers())
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = await client.post("/v1/messages", content=BODY, headers=headers())
                elapsed = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"status {r.status_code} from {url}")
                samples.append(elapsed)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(one_client)
    return samples


async def ttft(url: str, total: int) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(total):
            t0 = time.perf_counter()
            first: float | None = None
            async with client.stream("POST", "/v1/messages", content=STREAM_BODY,
                                     headers=headers()) as r:
                async for chunk in r.aiter_raw():
                    if first is None and b"content_block_delta" in chunk:
                        first = time.perf_counter() - t0
            if first is None:
                raise RuntimeError(f"no content_block_delta from {url}")
            samples.append(first)
    return samples


async def run(args: argparse.Namespace, upstream: str, proxy: str,
              proxy_pid: int) -> dict[str, Any]:
    await load(upstream, 8, 400)  # warm both paths (connections, caches, JIT-free but lazy)
    await load(proxy, 8, 400)
    results: dict[str, Any] = {}
    worst50 = worst99 = -1e9
    for concurrency in (1, 16, 64):
        total = max(args.requests, concurrency * 20)
        direct = await load(upstream, concurrency, total)
        cpu0 = cpu_seconds(proxy_pid)
        proxied = await load(proxy, concurrency, total)
        cpu_us = (cpu_seconds(proxy_pid) - cpu0) / len(proxied) * 1e6
        d50, d99 = quantile(direct, 0.5) * 1e3, quantile(direct, 0.99) * 1e3
        p50, p99 = quantile(proxied, 0.5) * 1e3, quantile(proxied, 0.99) * 1e3
        print(f"c={concurrency:>2}: direct p50={d50:.3f}ms p99={d99:.3f}ms | proxy "
              f"p50={p50:.3f}ms p99={p99:.3f}ms | added p50={p50 - d50:.3f}ms "
              f"p99={p99 - d99:.3f}ms (n={len(proxied)}; proxy CPU {cpu_us:.0f}us/request)")
        results[f"c{concurrency}"] = {
            "direct_p50_ms": round(d50, 3), "direct_p99_ms": round(d99, 3),
            "proxy_p50_ms": round(p50, 3), "proxy_p99_ms": round(p99, 3),
            "proxy_cpu_us_per_request": round(cpu_us)}
        worst50, worst99 = max(worst50, p50 - d50), max(worst99, p99 - d99)
    await ttft(upstream, 20)
    await ttft(proxy, 20)
    t_direct = await ttft(upstream, args.stream_requests)
    t_proxy = await ttft(proxy, args.stream_requests)
    td, tp = quantile(t_direct, 0.5) * 1e3, quantile(t_proxy, 0.5) * 1e3
    print(f"streaming TTFT p50: direct {td:.3f}ms, proxy {tp:.3f}ms, added {tp - td:.3f}ms")
    results["summary"] = {"added_p50_ms": round(worst50, 3), "added_p99_ms": round(worst99, 3),
                          "ttft_added_p50_ms": round(tp - td, 3)}
    return results


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as out:
        return subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--stream-requests", type=int, default=200)
    parser.add_argument("--nats", default=None)
    parser.add_argument("--logs", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    nats_server = None if args.nats else EmbeddedNats().start()
    nats_url = args.nats or (nats_server.url if nats_server else "")
    up_port, proxy_port = free_port(), free_port()
    procs = []
    try:
        procs.append(spawn(["upstream", "--port", str(up_port)],
                           args.logs / "bench-upstream.log"))
        procs.append(spawn(["proxy", "--region", "bench", "--upstream",
                            f"http://127.0.0.1:{up_port}", "--nats", nats_url,
                            "--port", str(proxy_port), "--provision"],
                           args.logs / "bench-proxy.log"))
        wait_for_port("127.0.0.1", up_port, 30)
        wait_for_port("127.0.0.1", proxy_port, 30)
        time.sleep(1.0)  # let the proxy's feed read the (empty) enforcement stream
        results = anyio.run(run, args, f"http://127.0.0.1:{up_port}",
                            f"http://127.0.0.1:{proxy_port}", procs[1].pid,
                            backend_options={"use_uvloop": True})
        metrics = httpx.get(f"http://127.0.0.1:{proxy_port}/metrics").text
        drops = [line for line in metrics.splitlines()
                 if line.startswith(("safeguards_csp_telemetry_dropped_total",
                                     "safeguards_csp_telemetry_sent_total"))]
        print("proxy telemetry:", "; ".join(drops))
        summary = results.pop("summary")
        print("levels:", json.dumps(results))
        print(json.dumps(summary))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if nats_server is not None:
            nats_server.close()


if __name__ == "__main__":
    main()
