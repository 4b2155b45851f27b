"""In-process gate benchmark: ``check`` latency with 100,000 accounts cached, and the cache's RSS.

    python benchmarks/gate.py [--accounts 100000] [--checks 300000]

Commands are applied one at a time (as the enforcement feed does) with a mix of levels; checks hit
random cached accounts plus 10% unknown ones. Each check is timed on its own with
``perf_counter_ns`` with the garbage collector on (the cache frozen out of its scans, as the
servers do after the initial sync); the clock is read once per batch of 1,000 checks.
The last line is JSON: ``{"accounts", "check_p50_us", "check_p99_us", ...}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import time
from datetime import UTC, datetime

from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import default_policy


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=300_000)
    args = parser.parse_args()
    policy = default_policy()
    rng = random.Random(7)
    issued = datetime.now(UTC)
    now = time.time()

    gc.collect()
    before = rss_bytes()
    gate = Gate(policy)
    gate.touch(now)
    levels = [0, 1, 1, 2, 2, 3, 4]
    for i in range(args.accounts):
        level = levels[i % len(levels)]
        tier = policy.rate_tiers[level]
        gate.apply(EnforcementCommand(
            command_id=f"cmd-{i}", account_id=f"acct-{i:08d}", region="eu", level=level,
            requests_per_minute=tier.requests_per_minute,
            tokens_per_minute=tier.tokens_per_minute,
            interventions=policy.ladder[level].interventions, expires_at=None, version=1,
            policy_version=policy.version, reason="bench", issued_at=issued,
        ), now)
    gc.collect()
    cache_bytes = rss_bytes() - before
    print(f"cache: {gate.size} accounts, RSS delta {cache_bytes / 1e6:.1f} MB "
          f"({cache_bytes / max(gate.size, 1):.0f} B/account)")

    requests = [GateRequest(f"acct-{rng.randrange(args.accounts):08d}", f"r{i}")
                for i in range(10_000)]
    requests += [GateRequest(f"new-{i}", f"u{i}") for i in range(1_000)]
    rng.shuffle(requests)
    check = gate.check
    clock = time.perf_counter_ns
    samples = []
    # As the servers do once the cache is loaded: the long-lived cache leaves the GC's scans.
    gc.freeze()
    for i in range(args.checks):
        r = requests[i % len(requests)]
        if i % 1000 == 0:
            now = time.time()
        t0 = clock()
        check(r, now)
        samples.append(clock() - t0)
    samples.sort()
    n = len(samples)
    p50 = samples[n // 2] / 1000
    p99 = samples[int(n * 0.99)] / 1000
    p999 = samples[int(n * 0.999)] / 1000
    print(f"check: n={n} p50={p50:.2f}us p99={p99:.2f}us p99.9={p999:.2f}us "
          f"max={samples[-1] / 1000:.1f}us")
    print("decisions:", dict(sorted(gate.counts.items(), key=lambda kv: -kv[1])[:6]))
    print(json.dumps({"accounts": gate.size, "check_p50_us": round(p50, 3),
                      "check_p99_us": round(p99, 3), "cache_rss_mb": round(cache_bytes / 1e6, 1)}))


if __name__ == "__main__":
    main()
