"""Proxy benchmark: latency the proxy adds over calling the upstream stand-in directly.

    python benchmarks/proxy.py [--requests 2000] [--rounds 4] [--nats URL] [--model-ms 50]
                               [--classifier] [--front-end messages|bedrock|vertex|all]
                               [--workers N]

The upstream stand-in and the proxy each run in their own process (``safeguards upstream`` and
``safeguards proxy``, on uvloop); NATS is an embedded server unless ``--nats`` names one. The load
comes from a third process, ``benchmarks/loadgen.py`` (raw keep-alive connections on uvloop, a few
tens of microseconds of client CPU per request, so the client is not what is measured), at 1, 16
and 64 concurrent clients, non-streaming. Direct and proxied runs alternate in ``--rounds``
rounds per level, so load from other work on a shared machine falls on both alike. Before the
levels, every account they will name is served once, so they measure accounts the gate already
serves; a new account's first request (its home learnt or claimed, its gate entry made) is
measured apart, at one client from accounts never seen (``new_account``). Streaming:
time to the first ``content_block_delta`` byte, direct vs proxied, at 1 client.

With ``--model-ms M`` each request asks the stand-in to take a model time drawn from
[M/2, 3M/2] (the same sequence direct and proxied) and each sample leaves that time out, so the
figures are what the path costs while the clients wait on a model-like upstream, as they would
in production, instead of CPU queueing on a saturated machine.

Per level it prints direct and proxied p50/p99, the added latency and the ratio, the CPU each
process spent per request (proxy, upstream, load generator) and how busy the whole machine was:
when the machine is saturated (closed-loop clients keep every core busy) latency is queueing for
CPU, and the proxy's cost shows up as its CPU per request times the queue, not as its own delay.
Each front end (``--front-end``, all three by default) is measured the same way against the
same stand-in, which answers in each provider's shape: the Messages API (``/v1/messages``),
Amazon Bedrock's (``/model/{id}/invoke``, streaming in AWS event-stream frames) and Google
Vertex AI's (``:rawPredict`` / ``:streamRawPredict``). The last line is JSON: per front end, the
worst figure over the levels (``{"added_p50_ms", "added_p99_ms", "ttft_added_p50_ms", ...}``,
then the one-client figures, the proxy's highest CPU per request and how busy the machine got),
and the worst over the front ends.

With ``--workers N`` a second proxy serves the same upstream from N worker processes
(``safeguards proxy --workers N``), and the run ends with requests per second at 64 clients
(non-streaming Messages requests; timed requests over the load generator's wall time), the
one-process proxy and the N-worker one alternating in ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from loadgen import WARMUP  # requests each load generator client sends before its samples

from safeguards.adapters.csp.caller_auth import CallerKey, load_caller_keys
from safeguards.adapters.embedded import EmbeddedNats, free_port
from safeguards.adapters.embedded.ports import wait_for_port

LOADGEN = Path(__file__).with_name("loadgen.py")
# A prompt the screening cascade's first stage clears, as most benign requests are served.
PROMPT = "What is a good recipe for banana bread with walnuts?"
FRONT_ENDS = ("messages", "bedrock", "vertex")


@functools.cache
def caller_key() -> CallerKey:
    """The proxy requires signed callers (its default); the clients sign with the region's key
    (the state folder's, which the proxy process reads too)."""
    return load_caller_keys("bench")[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (a noise-robust cost measure)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Run:
    """Samples (ms) and the CPU seconds spent by the load generator and the servers."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.loadgen_cpu = 0.0
        self.server_cpu: dict[str, float] = {}
        self.busy = 0.0
        self.total = 0.0
        self.wall = 0.0


_account_base = iter(range(0, 10**9, 1_000_000))


# The load generator names its accounts ``bench-{n % 50,000}``: every level reuses the same
# accounts (the steady state of accounts the gate already serves); a new account's first request
# is measured apart, on accounts past every level's, a new range each time (``_fresh_slots``).
ACCOUNT_NAMES = 50_000
FRESH_ACCOUNTS = 200
_fresh_slots = itertools.count()


def accounts_touched(concurrency: int, total: int) -> int:
    """How many accounts one load generator run names (``loadgen.run``: each request its own)."""
    return concurrency * (WARMUP + max(1, total // concurrency))


def load(url: str, concurrency: int, total: int, run: Run, pids: dict[str, int], *,
         model_ms: float, prompt: str, front_end: str, stream: bool = False,
         account_base: int | None = None) -> None:
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy0, total0 = machine_busy()
    base = next(_account_base) if account_base is None else account_base
    cmd = [sys.executable, str(LOADGEN), url, str(concurrency), str(total),
           "--account-base", str(base), "--model-ms", str(model_ms),
           "--prompt", prompt, "--sign", f"{caller_key().key_id}:{caller_key().secret.hex()}",
           "--front-end", front_end]
    if stream:
        cmd.append("--stream")
    done = subprocess.run(cmd, capture_output=True, timeout=600)
    if done.returncode != 0:  # say why (a status other than 200, a lost connection), not only that
        raise SystemExit(f"load generator failed at {concurrency} clients: "
                         f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    out = done.stdout
    busy1, total1 = machine_busy()
    result = json.loads(out.decode().strip().splitlines()[-1])
    run.samples += result["samples_ms"]
    run.wall += result["wall_s"]
    run.loadgen_cpu += result["cpu_s"]
    for name, pid in pids.items():
        run.server_cpu[name] = run.server_cpu.get(name, 0.0) + cpu_seconds(pid) - cpu0[name]
    run.busy += busy1 - busy0
    run.total += total1 - total0


def per_request_us(run: Run, name: str) -> int:
    return round(run.server_cpu.get(name, 0.0) / max(1, len(run.samples)) * 1e6)


def run_levels(args: argparse.Namespace, upstream: str, proxy: str,
               pids: dict[str, int], front_end: str) -> dict[str, Any]:
    print(f"front end: {front_end}")
    go = functools.partial(load, pids=pids, model_ms=args.model_ms, prompt=args.prompt,
                           front_end=front_end)
    go(upstream, 8, 400, Run())  # warm both paths (connections, caches)
    go(proxy, 8, 400, Run())
    # every account the levels will name has been served once (its home learnt, its gate entry
    # made): the levels measure the steady state; a new account's first request comes after
    level_sizes = [(c, max(args.requests, c * 20)) for c in (1, 16, 64)]
    touched = max(accounts_touched(8, 400),
                  *(accounts_touched(c, max(c, total // args.rounds)) for c, total in level_sizes))
    go(proxy, 64, touched - 64 * WARMUP, Run())
    results: dict[str, Any] = {}
    worst50 = worst99 = -1e9
    cores = os.cpu_count() or 1
    for concurrency, total in level_sizes:
        per_round = max(concurrency, total // args.rounds)
        direct, proxied = Run(), Run()
        for _ in range(args.rounds):
            go(upstream, concurrency, per_round, direct)
            go(proxy, concurrency, per_round, proxied)
        d50, d99 = quantile(direct.samples, 0.5), quantile(direct.samples, 0.99)
        p50, p99 = quantile(proxied.samples, 0.5), quantile(proxied.samples, 0.99)
        busy = proxied.busy / max(1.0, proxied.total)
        level = {
            "direct_p50_ms": round(d50, 3), "direct_p99_ms": round(d99, 3),
            "proxy_p50_ms": round(p50, 3), "proxy_p99_ms": round(p99, 3),
            "added_p50_ms": round(p50 - d50, 3), "added_p99_ms": round(p99 - d99, 3),
            "ratio_p50": round(p50 / d50, 2), "ratio_p99": round(p99 / d99, 2),
            "proxy_cpu_us_per_request": per_request_us(proxied, "proxy"),
            "upstream_cpu_us_per_request": per_request_us(proxied, "upstream"),
            "loadgen_cpu_us_per_request": round(
                proxied.loadgen_cpu / max(1, len(proxied.samples)) * 1e6),
            "machine_busy_during_proxied": round(busy, 2),
            "machine_busy_during_direct": round(direct.busy / max(1.0, direct.total), 2),
            "n": len(proxied.samples),
        }
        print(f"c={concurrency:>2}: direct p50={d50:.3f}ms p99={d99:.3f}ms | proxy "
              f"p50={p50:.3f}ms p99={p99:.3f}ms | added p50={p50 - d50:.3f}ms "
              f"p99={p99 - d99:.3f}ms | ratio p50 x{p50 / d50:.2f} p99 x{p99 / d99:.2f} "
              f"(n={len(proxied.samples)}; CPU/request: proxy "
              f"{level['proxy_cpu_us_per_request']}us, upstream "
              f"{level['upstream_cpu_us_per_request']}us, loadgen "
              f"{level['loadgen_cpu_us_per_request']}us; machine {busy:.0%} busy of {cores} "
              f"cores{' - SATURATED: latency is CPU queueing' if busy > 0.9 else ''})")
        results[f"c{concurrency}"] = level
        worst50, worst99 = max(worst50, p50 - d50), max(worst99, p99 - d99)
    # a new account's first request (one client, each request from an account never seen)
    fresh = Run()
    fresh_base = touched + (FRESH_ACCOUNTS + WARMUP) * next(_fresh_slots)
    if fresh_base + FRESH_ACCOUNTS + WARMUP > ACCOUNT_NAMES:
        raise SystemExit("--requests too large: no account names left for new accounts")
    go(proxy, 1, FRESH_ACCOUNTS, fresh, account_base=fresh_base)
    c1 = results["c1"]
    f50, f99 = quantile(fresh.samples, 0.5), quantile(fresh.samples, 0.99)
    results["new_account"] = {"proxy_p50_ms": round(f50, 3), "proxy_p99_ms": round(f99, 3),
                              "added_p50_ms": round(f50 - c1["direct_p50_ms"], 3),
                              "added_p99_ms": round(f99 - c1["direct_p99_ms"], 3),
                              "n": len(fresh.samples)}
    print(f"a new account's first request: proxy p50={f50:.3f}ms p99={f99:.3f}ms "
          f"(added vs c=1 direct: p50={f50 - c1['direct_p50_ms']:.3f}ms "
          f"p99={f99 - c1['direct_p99_ms']:.3f}ms; n={len(fresh.samples)})")
    go(upstream, 1, 20, Run(), stream=True)
    go(proxy, 1, 20, Run(), stream=True)
    t_direct, t_proxy = Run(), Run()
    for _ in range(args.rounds):
        go(upstream, 1, args.stream_requests // args.rounds, t_direct, stream=True)
        go(proxy, 1, args.stream_requests // args.rounds, t_proxy, stream=True)
    td, tp = quantile(t_direct.samples, 0.5), quantile(t_proxy.samples, 0.5)
    print(f"streaming TTFT p50: direct {td:.3f}ms, proxy {tp:.3f}ms, added {tp - td:.3f}ms")
    results["ttft"] = {"direct_p50_ms": round(td, 3), "proxy_p50_ms": round(tp, 3)}
    levels = [results[f"c{c}"] for c in (1, 16, 64)]
    results["summary"] = {
        "added_p50_ms": round(worst50, 3), "added_p99_ms": round(worst99, 3),
        "ttft_added_p50_ms": round(tp - td, 3),
        # the same figures at one client (no queueing), and what explains the rest
        "c1_added_p50_ms": levels[0]["added_p50_ms"], "c1_added_p99_ms": levels[0]["added_p99_ms"],
        "new_account_added_p50_ms": results["new_account"]["added_p50_ms"],
        "new_account_added_p99_ms": results["new_account"]["added_p99_ms"],
        "proxy_cpu_us_per_request": max(lv["proxy_cpu_us_per_request"] for lv in levels),
        "max_machine_busy": max(lv["machine_busy_during_proxied"] for lv in levels),
    }
    return results


def compare_workers(args: argparse.Namespace, one: str, many: str,
                    pids: dict[str, int]) -> dict[str, Any]:
    """Requests per second at 64 clients: the one-process proxy vs the N-worker one."""
    go = functools.partial(load, pids=pids, model_ms=args.model_ms, prompt=args.prompt,
                           front_end="messages")
    go(many, 64, 640, Run())  # warm every worker's upstream connections
    total = max(args.requests, 64 * 20)
    single, workers = Run(), Run()
    for _ in range(args.rounds):
        go(one, 64, total // args.rounds, single)
        go(many, 64, total // args.rounds, workers)
    rps_1 = len(single.samples) / single.wall
    rps_n = len(workers.samples) / workers.wall
    print(f"c=64 requests/s: 1 process {rps_1:.0f}, {args.workers} workers {rps_n:.0f} "
          f"(x{rps_n / rps_1:.2f}); p50 {quantile(single.samples, 0.5):.3f}ms vs "
          f"{quantile(workers.samples, 0.5):.3f}ms")
    return {"workers": args.workers, "c64_rps_1_worker": round(rps_1, 1),
            f"c64_rps_{args.workers}_workers": round(rps_n, 1),
            "c64_rps_ratio": round(rps_n / rps_1, 2),
            "c64_p50_ms_1_worker": round(quantile(single.samples, 0.5), 3),
            f"c64_p50_ms_{args.workers}_workers": round(quantile(workers.samples, 0.5), 3)}


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as out:
        return subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--stream-requests", type=int, default=200)
    parser.add_argument("--nats", default=None)
    parser.add_argument("--model-ms", type=float, default=0.0,
                        help="a model time per request, uniform in [M/2, 3M/2], that the "
                             "stand-in takes and the samples leave out (0: it answers at once, "
                             "and 16 or 64 closed-loop clients saturate a small machine's CPU)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"))
    parser.add_argument("--prompt", default=PROMPT,
                        help="the user turn of every request (with --classifier: a prompt the "
                             "screening cascade's first stage clears, the default, or one it "
                             "passes on to the contextual model)")
    parser.add_argument("--classifier", action="store_true",
                        help="also run the classifier adapter (the shipped model, CPU), so that "
                             "fresh accounts' requests are screened as in production; without "
                             "it every screen fails open at once (no responders)")
    parser.add_argument("--front-end", choices=(*FRONT_ENDS, "all"), default="all")
    parser.add_argument("--workers", type=int, default=1,
                        help="also measure requests/s at 64 clients of a proxy with this many "
                             "worker processes against the one-process proxy")
    parser.add_argument("--nonce-ledger-deadline-ms", type=float, default=100.0,
                        help="the proxies' deadline for the region's nonce ledger (the "
                             "proxy's default; one answer past it is a 503, which ends the "
                             "run: raise it on a machine other work keeps busy)")
    args = parser.parse_args()
    ledger = ["--nonce-ledger-deadline-ms", str(args.nonce_ledger_deadline_ms)]
    front_ends = FRONT_ENDS if args.front_end == "all" else (args.front_end,)
    nats_server = None if args.nats else EmbeddedNats().start()
    nats_url = args.nats or (nats_server.url if nats_server else "")
    up_port, proxy_port, workers_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(spawn(["upstream", "--port", str(up_port)],
                           args.logs / "bench-upstream.log"))
        procs.append(spawn(["proxy", "--region", "bench", "--upstream",
                            f"http://127.0.0.1:{up_port}", "--nats", nats_url,
                            "--port", str(proxy_port), "--provision", *ledger],
                           args.logs / "bench-proxy.log"))
        if args.classifier:
            log = args.logs / "bench-classifier.log"
            procs.append(spawn(["classifier", "serve", "--region", "bench", "--nats-url",
                                nats_url], log))
            deadline = time.monotonic() + 120
            while b"classifier serving region" not in log.read_bytes():
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    raise RuntimeError(f"the classifier did not start: see {log}")
                time.sleep(0.5)
        if args.workers > 1:
            procs.append(spawn(["proxy", "--region", "bench", "--upstream",
                                f"http://127.0.0.1:{up_port}", "--nats", nats_url,
                                "--port", str(workers_port), "--workers", str(args.workers),
                                *ledger],
                               args.logs / "bench-proxy-workers.log"))
            wait_for_port("127.0.0.1", workers_port, 60)
        wait_for_port("127.0.0.1", up_port, 30)
        wait_for_port("127.0.0.1", proxy_port, 30)
        time.sleep(1.0)  # let the proxy's feed read the (empty) enforcement stream
        summaries: dict[str, Any] = {}
        for front_end in front_ends:
            results = run_levels(args, f"http://127.0.0.1:{up_port}",
                                 f"http://127.0.0.1:{proxy_port}",
                                 {"upstream": procs[0].pid, "proxy": procs[1].pid}, front_end)
            summaries[front_end] = results.pop("summary")
            print(f"levels ({front_end}):", json.dumps(results))
        throughput: dict[str, Any] = {}
        if args.workers > 1:
            throughput = compare_workers(args, f"http://127.0.0.1:{proxy_port}",
                                         f"http://127.0.0.1:{workers_port}",
                                         {"upstream": procs[0].pid, "proxy": procs[1].pid})
        metrics = httpx.get(f"http://127.0.0.1:{proxy_port}/metrics").text
        drops = [line for line in metrics.splitlines()
                 if line.startswith(("safeguards_csp_telemetry_dropped_total",
                                     "safeguards_csp_telemetry_sent_total",
                                     "safeguards_csp_fallbacks_total",
                                     "safeguards_csp_first_stage_total"))]
        print("proxy telemetry:", "; ".join(drops))
        print(json.dumps({
            **summaries, **throughput, "model_ms": args.model_ms,
            "nonce_ledger_deadline_ms": args.nonce_ledger_deadline_ms,
            "worst_added_p50_ms": max(s["added_p50_ms"] for s in summaries.values()),
            "worst_added_p99_ms": max(s["added_p99_ms"] for s in summaries.values())}))
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
