"""Caller assertion verification: what binding the method, path and a nonce (``v2``) adds per
request over the ``v1`` scheme (identity and body only), and what taking the nonce in the
workers' shared-memory replay table (``shared_nonces``) adds over this process's own, in one run.

    python benchmarks/caller_auth.py [--verifies 20000] [--body-bytes 2048 65536]
                                     [--max-request-rate 1000] [--ledger-verifies 5000]
                                     [--nats nats://...]

For each body size, ``v1``, ``v2`` and ``v2_shared`` verifications alternate in rounds of
1,000 (so drift on a shared machine falls on all alike), each timed on its own with
``perf_counter_ns``: the assertion parsed, the body hashed, the HMAC computed and compared;
``v2`` also canonicalises the target (cached, as a serving path sends few spellings) and takes
the nonce. ``v1`` is the scheme's former check, kept here only as the baseline. ``v2_shared``
is ``v2`` with the nonce taken in a shared table sized for ``--max-request-rate`` (as
``safeguards proxy --workers N`` makes it; one process here, so its stripe locks are
uncontended). Every assertion is distinct (``v2`` refuses a nonce twice). The last line is
JSON: per body size, each scheme's median and p99 in µs, ``v2`` over ``v1`` (``ratio_p50``)
and ``v2_shared`` over ``v2`` (``shared_vs_in_process_p50``, ``_p99``).

``ledger`` in that line: what taking the nonce in the region's ledger as well (``nonce_ledger``:
a KV create over NATS, after the host's table) adds to a whole ``verify``. ``--ledger-verifies``
verifies with the ledger and as many without it alternate in rounds of 500 in one event loop,
against ``--nats`` (default: a JetStream nats-server started here, file storage, R1) with the
serving deadline (25 ms; answers past it are counted as ``unavailable``, not timed). Reported:
each one's median and p99 in µs and the ledger's added median and p99 (``added_p50_us``,
``added_p99_us``).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

import anyio
import nats

from safeguards.adapters.bus.nonce_bucket import provision_nonce_bucket
from safeguards.adapters.csp.caller_auth import CallerAuth, CallerKey, assertion
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.nonce_ledger import RegionLedger
from safeguards.adapters.csp.shared_nonces import SharedNonces, slots_for
from safeguards.adapters.embedded import EmbeddedNats

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


def measure(size: int, verifies: int, max_rate: float) -> dict[str, float]:
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "x" * size}]}).encode()[:size]
    now = time.time()
    ts = int(now)
    auth, shared = CallerAuth([KEY]), CallerAuth([KEY])
    table = SharedNonces.create(slots_for(max_rate))
    shared.nonces = table
    keys = {KEY.key_id: KEY.secret}
    v1 = [v1_assertion(body, ts)] * verifies  # v1 takes one assertion any number of times
    v2 = [assertion(KEY, method="POST", target=TARGET, account=ACCOUNT, body=body, now=now)
          for _ in range(verifies)]
    v2_shared = [assertion(KEY, method="POST", target=TARGET, account=ACCOUNT, body=body,
                           now=now) for _ in range(verifies)]
    clock = time.perf_counter_ns
    old: list[int] = []
    new: list[int] = []
    new_shared: list[int] = []

    def check_v1(value: str) -> None:
        v1_check(keys, IDENTITY, value, body, now)

    def check_v2(value: str) -> None:
        auth.check(IDENTITY, value, body, "203.0.113.7", now, method="POST", target=TARGET)

    def check_v2_shared(value: str) -> None:
        shared.check(IDENTITY, value, body, "203.0.113.7", now, method="POST", target=TARGET)

    runs: tuple[tuple[Callable[[str], None], list[str], list[int]], ...] = (
        (check_v1, v1, old), (check_v2, v2, new), (check_v2_shared, v2_shared, new_shared))
    try:
        for start in range(0, verifies, 1000):
            for check, values, samples in runs:
                for value in values[start:start + 1000]:
                    t0 = clock()
                    check(value)
                    samples.append(clock() - t0)
    finally:
        table.close()
    assert auth.refused == shared.refused == {}, (auth.refused, shared.refused)  # all proven
    (old50, old99), (new50, new99) = percentiles(old), percentiles(new)
    shared50, shared99 = percentiles(new_shared)
    print(f"body {len(body)} B: v1 p50={old50:.2f}us p99={old99:.2f}us  "
          f"v2 p50={new50:.2f}us p99={new99:.2f}us  ratio p50={new50 / old50:.2f}  "
          f"v2_shared p50={shared50:.2f}us p99={shared99:.2f}us  "
          f"vs v2 p50={shared50 / new50:.2f}")
    return {"body_bytes": len(body), "v1_p50_us": round(old50, 2), "v1_p99_us": round(old99, 2),
            "v2_p50_us": round(new50, 2), "v2_p99_us": round(new99, 2),
            "ratio_p50": round(new50 / old50, 3),
            "v2_shared_p50_us": round(shared50, 2), "v2_shared_p99_us": round(shared99, 2),
            "shared_vs_in_process_p50": round(shared50 / new50, 3),
            "shared_vs_in_process_p99": round(shared99 / new99, 3)}


async def measure_ledger(url: str, verifies: int) -> dict[str, float]:
    """``verify`` with the region's ledger and without, alternating, in one event loop."""
    body = json.dumps({"max_tokens": 100, "messages": [{"role": "user", "content": "x" * 2000}]}
                      ).encode()
    region = "bench" + secrets.token_hex(3)
    nc = await nats.connect(url, name="bench-nonce-ledger")
    try:
        await provision_nonce_bucket(nc.jetstream(), region)
        ledger = RegionLedger(region, lambda: nc)  # required, the serving deadline
        plain, regional = CallerAuth([KEY]), CallerAuth([KEY], ledger=ledger)
        clock = time.perf_counter_ns
        samples: dict[str, list[int]] = {"without": [], "with": []}
        unavailable = 0
        for _ in range(200):  # warm the connection and the server's stream
            await regional.verify(IDENTITY, assertion(KEY, method="POST", target=TARGET,
                                                      account=ACCOUNT, body=body, now=time.time()),
                                  body, "203.0.113.7", time.time(), method="POST", target=TARGET)
        for start in range(0, verifies, 500):
            for name, auth in (("without", plain), ("with", regional)):
                now = time.time()
                values = [assertion(KEY, method="POST", target=TARGET, account=ACCOUNT,
                                    body=body, now=now)
                          for _ in range(min(500, verifies - start))]
                for value in values:
                    t0 = clock()
                    try:
                        await auth.verify(IDENTITY, value, body, "203.0.113.7", now,
                                          method="POST", target=TARGET)
                    except BadRequest as exc:
                        if exc.status != 503:
                            raise
                        unavailable += 1
                        continue
                    samples[name].append(clock() - t0)
        assert plain.refused == regional.refused == {}, (plain.refused, regional.refused)
    finally:
        await nc.close()
    (off50, off99), (on50, on99) = percentiles(samples["without"]), percentiles(samples["with"])
    print(f"ledger: verify without p50={off50:.1f}us p99={off99:.1f}us  with "
          f"p50={on50:.1f}us p99={on99:.1f}us  added p50={on50 - off50:.1f}us "
          f"p99={on99 - off99:.1f}us  unavailable={unavailable}")
    return {"verifies": verifies, "without_p50_us": round(off50, 1),
            "without_p99_us": round(off99, 1), "with_p50_us": round(on50, 1),
            "with_p99_us": round(on99, 1), "added_p50_us": round(on50 - off50, 1),
            "added_p99_us": round(on99 - off99, 1), "unavailable": unavailable,
            "deadline_ms": ledger.deadline_s * 1000}


def ledger_figures(url: str | None, verifies: int) -> dict[str, float]:
    if url is not None:
        return anyio.run(measure_ledger, url, verifies)
    with EmbeddedNats() as server:
        return anyio.run(measure_ledger, server.url, verifies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verifies", type=int, default=20_000)
    parser.add_argument("--body-bytes", type=int, nargs="+", default=[2048, 65536])
    parser.add_argument("--max-request-rate", type=float, default=1000.0,
                        help="what the shared table is sized for (slots_for)")
    parser.add_argument("--ledger-verifies", type=int, default=5000,
                        help="verifies with the region's nonce ledger (and as many without)")
    parser.add_argument("--nats", help="the ledger's NATS (default: a nats-server started here)")
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    results = [measure(size, args.verifies, args.max_request_rate) for size in args.body_bytes]
    ledger = ledger_figures(args.nats, args.ledger_verifies)
    print(json.dumps({"verifies": args.verifies, "max_request_rate": args.max_request_rate,
                      "shared_table_slots": slots_for(args.max_request_rate),
                      "results": results, "ledger": ledger}))


if __name__ == "__main__":
    main()
