"""Caller assertion verification: what binding the method, path and a nonce (``v2``) adds per
request over the ``v1`` scheme (identity and body only), in one run.

    python benchmarks/caller_auth.py [--verifies 20000] [--body-bytes 2048 65536]

For each body size, ``v1`` and ``v2`` verifications alternate in rounds of 1,000 (so drift on a
shared machine falls on both alike), each timed on its own with ``perf_counter_ns``: the
assertion parsed, the body hashed, the HMAC computed and compared; ``v2`` also canonicalises
the target (cached, as a serving path sends few spellings) and takes the nonce. ``v1`` is the
scheme's former check, kept here only as the baseline. Every assertion is distinct (``v2``
refuses a nonce twice). The last line is JSON: per body size, ``v1`` and ``v2`` median and p99
in µs and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from safeguards.adapters.csp.caller_auth import CallerAuth, CallerKey, assertion

KEY = CallerKey("door-1", bytes(range(32)))
ACCOUNT = "acct-bench"
TARGET = "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/invoke"
IDENTITY = {"x-csp-account-id": ACCOUNT}


def v1_assertion(body: bytes, ts: int) -> str:
    signed = "\n".join(("sg-caller-v1", str(ts), ACCOUNT, "", "", "",
                        hashlib.sha256(body).hexdigest())).encode("ascii")
    return f"v1 kid={KEY.key_id} ts={ts} sig={hmac.new(KEY.secret, signed, 'sha256').hexdigest()}"


def v1_check(keys: dict[str, bytes], identity: dict[str, str], value: str, body: bytes,
             now: float) -> None:
    """The v1 check as it was (minus its refusal counting)."""
    fields = dict(part.split("=", 1) for part in value.split(" ")[1:] if "=" in part)
    if not value.startswith("v1 ") or not {"kid", "ts", "sig"} <= fields.keys():
        raise ValueError("malformed")
    secret = keys[fields["kid"]]
    if not fields["ts"].isdigit() or abs(now - int(fields["ts"])) > 300:
        raise ValueError("expired")
    signed = "\n".join(("sg-caller-v1", fields["ts"], identity.get("x-csp-account-id", ""),
                        "", "", "", hashlib.sha256(body).hexdigest())).encode("ascii")
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["sig"]):
        raise ValueError("bad_signature")


def percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def measure(size: int, verifies: int) -> dict[str, float]:
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "x" * size}]}).encode()[:size]
    now = time.time()
    ts = int(now)
    auth = CallerAuth([KEY])
    keys = {KEY.key_id: KEY.secret}
    v1 = [v1_assertion(body, ts)] * verifies  # v1 takes one assertion any number of times
    v2 = [assertion(KEY, method="POST", target=TARGET, account=ACCOUNT, body=body, now=now)
          for _ in range(verifies)]
    clock = time.perf_counter_ns
    old: list[int] = []
    new: list[int] = []

    def check_v1(value: str) -> None:
        v1_check(keys, IDENTITY, value, body, now)

    def check_v2(value: str) -> None:
        auth.check(IDENTITY, value, body, "203.0.113.7", now, method="POST", target=TARGET)

    runs: tuple[tuple[Callable[[str], None], list[str], list[int]], ...] = (
        (check_v1, v1, old), (check_v2, v2, new))
    for start in range(0, verifies, 1000):
        for check, values, samples in runs:
            for value in values[start:start + 1000]:
                t0 = clock()
                check(value)
                samples.append(clock() - t0)
    assert auth.refused == {}, auth.refused  # every v2 assertion was proven
    (old50, old99), (new50, new99) = percentiles(old), percentiles(new)
    print(f"body {len(body)} B: v1 p50={old50:.2f}us p99={old99:.2f}us  "
          f"v2 p50={new50:.2f}us p99={new99:.2f}us  ratio p50={new50 / old50:.2f}")
    return {"body_bytes": len(body), "v1_p50_us": round(old50, 2), "v1_p99_us": round(old99, 2),
            "v2_p50_us": round(new50, 2), "v2_p99_us": round(new99, 2),
            "ratio_p50": round(new50 / old50, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verifies", type=int, default=20_000)
    parser.add_argument("--body-bytes", type=int, nargs="+", default=[2048, 65536])
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    results = [measure(size, args.verifies) for size in args.body_bytes]
    print(json.dumps({"verifies": args.verifies, "results": results}))


if __name__ == "__main__":
    main()
