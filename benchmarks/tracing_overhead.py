"""What traces cost the inline path: the proxy's decision path with tracing off, and with the
OpenTelemetry SDK configured (its in-memory exporter behind the batch processor, as an OTLP one
would be, and behind the simple processor, which exports on the request's own thread), and with
1% of traces sampled (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``..._ARG=0.01``).

    python benchmarks/tracing_overhead.py [--requests 20000] [--rounds 10]

Each request is one real ``CspProxy`` ASGI call (no sockets: the scope, body and send are in
memory) for an account whose enforcement blocks it: caller validation, body parsing, the gate's
check, the refusal in Anthropic's format and the telemetry hand-off (its buffer is not drained:
a full one is a counted drop, the same cost either way). Traced, the request also has its span
(GenAI attributes, the usage and action added by telemetry) and a context for its messages. The
modes alternate in rounds so that drift on a shared machine falls on all of them; each request
is timed on its own with ``perf_counter_ns``. Also timed: writing a ``traceparent`` header and
reading one (valid and malformed), which the publishers and consumers do per message.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, TraceFlags

from safeguards.adapters import tracing
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import default_policy
from safeguards.regions.tracing import install

ACCOUNT = "acct-bench"
BODY = json.dumps({"model": "claude-bench", "max_tokens": 16, "messages": [
    {"role": "user", "content": "Summarise the plot of a well-known novel in two lines."}]}
).encode()


def _proxy() -> CspProxy:
    policy = default_policy()
    proxy = CspProxy(ProxyConfig(region="bench", upstream_url="http://127.0.0.1:9",
                                 link_key=os.urandom(32), caller_auth="loopback"), policy)
    level = 4  # suspended: refused by the gate without an upstream
    tier = policy.rate_tiers[level]
    now = time.time()
    proxy.gate.touch(now)
    proxy.gate.apply(EnforcementCommand(
        command_id="c1", account_id=ACCOUNT, region="bench", level=level,
        requests_per_minute=tier.requests_per_minute, tokens_per_minute=tier.tokens_per_minute,
        interventions=policy.ladder[level].interventions, expires_at=None, version=1,
        policy_version=policy.version, reason="bench", issued_at=datetime.now(UTC)), now)
    return proxy


async def _round(proxy: CspProxy, n: int, out: list[int]) -> None:
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/v1/messages", "raw_path": b"/v1/messages",
        "query_string": b"", "client": ("127.0.0.1", 50000),
        "headers": [(b"x-csp-account-id", ACCOUNT.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())]}
    message = {"type": "http.request", "body": BODY, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await proxy(scope, receive, send)
        out.append(clock() - t0)
    assert set(statuses) == {403}, set(statuses)  # refused by the gate, every time


def _summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered) / 1000, 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99)] / 1000, 2),
            "mean_us": round(statistics.fmean(ordered) / 1000, 2)}


def _per_call_ns(call: Callable[[], object], n: int = 200_000) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        call()
    return round((time.perf_counter_ns() - t0) / n, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000, help="per mode")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("SAFEGUARDS_STATE_DIR", tempfile.mkdtemp(prefix="sg-bench-"))
    proxy = _proxy()
    memory = InMemorySpanExporter()
    batch = TracerProvider()
    batch.add_span_processor(BatchSpanProcessor(memory, max_queue_size=65_536))
    simple = TracerProvider()
    simple.add_span_processor(SimpleSpanProcessor(memory))
    sampled = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    sampled.add_span_processor(BatchSpanProcessor(memory, max_queue_size=65_536))
    modes: dict[str, TracerProvider | None] = {"off": None, "sdk_batch": batch,
                                               "sdk_simple": simple, "sdk_batch_1pct": sampled}
    samples: dict[str, list[int]] = {m: [] for m in modes}
    per_round = max(1, args.requests // args.rounds)

    async def run() -> None:
        for provider in modes.values():  # warm-up
            install(provider)
            await _round(proxy, 500, [])
        for _ in range(args.rounds):
            for name, provider in modes.items():
                install(provider)
                gc.collect()
                await _round(proxy, per_round, samples[name])
                memory.clear()
        install(None)

    anyio.run(run)
    for provider in (batch, simple, sampled):
        provider.shutdown()

    context = SpanContext(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, False,
                          TraceFlags(1))
    valid = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    malformed = {"traceparent": "00-" + "z" * 32 + "-00f067aa0ba902b7-01"}
    headers: dict[str, str] = {}
    result: dict[str, Any] = {"requests_per_mode": per_round * args.rounds}
    for name, values in samples.items():
        result[name] = _summary(values)
    off = result["off"]
    for name in ("sdk_batch", "sdk_simple", "sdk_batch_1pct"):
        result[f"{name}_median_ratio"] = round(result[name]["median_us"] / off["median_us"], 3)
        result[f"{name}_p99_ratio"] = round(result[name]["p99_us"] / off["p99_us"], 3)
    result["off_check_ns"] = _per_call_ns(lambda: tracing.TRACER is None)
    result["inject_traceparent_ns"] = _per_call_ns(lambda: tracing.inject(context, headers))
    result["read_traceparent_ns"] = _per_call_ns(lambda: tracing.remote_parent(valid))
    result["read_malformed_ns"] = _per_call_ns(lambda: tracing.remote_parent(malformed))
    for name in samples:
        print(f"{name:14s} median {result[name]['median_us']:8.2f} us   "
              f"p99 {result[name]['p99_us']:8.2f} us")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
