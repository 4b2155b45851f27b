"""Batch ledger benchmark: what recording a Message Batch in the region's batch ledger costs.

    python benchmarks/batch_ledger.py [--sizes 1,100,1000] [--creates 200] [--rounds 4]
                                      [--nats URL]

A proxy (in this process, uvicorn on loopback) with the upstream stand-in and NATS (embedded
unless ``--nats``): for each batch size, ``POST /v1/messages/batches`` from one client,
sequentially, with the region's batch ledger on (``BatchGate.records``: one sealed record
written before the answer) and off (memory only, as before the ledger), alternating in
``--rounds`` rounds so that other load on a shared machine falls on both alike. Fresh accounts
(screened: without a classifier each screening fails open at once) are the same in both arms.
Prints per size the create latency p50/p99 with and without, the added latency and the ratio,
and the record's bytes per batch entry (sealed values written / requests); the last line is
JSON with the same figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import Any

import anyio
import httpx

from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded import EmbeddedNats, free_port
from safeguards.core.policy import default_policy


def _body(size: int, n: int) -> bytes:
    return json.dumps({"requests": [
        {"custom_id": f"r{i}", "params": {
            "model": "claude-test-1", "max_tokens": 100,
            "messages": [{"role": "user",
                          "content": f"Summarise chapter {i} of the report, draft {n}."}]}}
        for i in range(size)]}).encode()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(args: argparse.Namespace, nats_url: str) -> dict[str, Any]:
    import nats

    region = "bench" + str(free_port())
    nc = await nats.connect(nats_url)
    await ensure_gate_streams(nc.jetstream(), region)
    await nc.close()
    base = default_policy()
    policy = replace(base, gate=replace(base.gate, max_staleness_s=2.0))
    config = ProxyConfig(region=region, upstream_url="", nats_url=nats_url,
                         caller_auth="loopback", telemetry_linger_s=0.005)
    out: dict[str, Any] = {}
    async with serving(UpstreamApp(None), "127.0.0.1", free_port(),
                       lifespan="off") as upstream_url:
        proxy = CspProxy(replace(config, upstream_url=upstream_url), policy)
        async with serving(proxy, "127.0.0.1", free_port()) as url, \
                httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert proxy.feed is not None
            with anyio.fail_after(10):
                await proxy.feed.ready.wait()
            records = proxy.batches.records
            assert records is not None
            proxy.batches.capacity = 10**6
            proxy.batches.max_held_chars = 10**12
            n = 0
            for size in args.sizes:
                arms: dict[str, list[float]] = {"on": [], "off": []}
                written = entries = 0
                for _ in range(args.rounds):
                    for arm in ("off", "on"):
                        proxy.batches.records = records if arm == "on" else None
                        for _ in range(args.creates // args.rounds):
                            n += 1
                            body = _body(size, n)
                            headers = {"x-csp-account-id": f"acct-{n % 64}",
                                       "content-type": "application/json"}
                            before = records.written_bytes
                            t0 = time.perf_counter()
                            answer = await client.post("/v1/messages/batches", content=body,
                                                       headers=headers)
                            arms[arm].append(time.perf_counter() - t0)
                            assert answer.status_code == 200, answer.text
                            if arm == "on":
                                written += records.written_bytes - before
                                entries += size
                assert not records.errors, records.errors
                off50, on50 = _pct(arms["off"], 0.5) * 1e3, _pct(arms["on"], 0.5) * 1e3
                off99, on99 = _pct(arms["off"], 0.99) * 1e3, _pct(arms["on"], 0.99) * 1e3
                out[str(size)] = {
                    "off_p50_ms": round(off50, 3), "on_p50_ms": round(on50, 3),
                    "off_p99_ms": round(off99, 3), "on_p99_ms": round(on99, 3),
                    "added_p50_ms": round(on50 - off50, 3), "added_p99_ms": round(on99 - off99, 3),
                    "ratio_p50": round(on50 / off50, 3), "ratio_p99": round(on99 / off99, 3),
                    "bytes_per_entry": round(written / entries, 1),
                    "mean_on_ms": round(statistics.fmean(arms["on"]) * 1e3, 3)}
                print(f"size {size:>5}: create p50 {off50:.2f} -> {on50:.2f} ms "
                      f"(+{on50 - off50:.2f}, x{on50 / off50:.2f}), p99 {off99:.2f} -> "
                      f"{on99:.2f} ms (+{on99 - off99:.2f}, x{on99 / off99:.2f}); "
                      f"{written / entries:.1f} bytes per entry")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 100, 1000])
    parser.add_argument("--creates", type=int, default=200, help="per size and arm")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--nats", default=None)
    args = parser.parse_args()
    if args.nats:
        result = anyio.run(_run, args, args.nats)
    else:
        with EmbeddedNats() as server:
            result = anyio.run(_run, args, server.url)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
