"""One account's burst of screenings, with and without per-account turns (``csp.screen_turns``).

The real admission path in one process: an embedded nats-server (or ``SAFEGUARDS_NATS_URL``), the
classifier service with the default model (``MicroBatchScorer``, as deployed), and an
``InlineGate`` whose ``Admission.admit`` is called directly (no HTTP). The default policy, with
the cascade's first stage off so that every prompt goes to the contextual model, as an
attacker's flagged prompts do. Modes alternate in rounds:

- ``turns``: ``gate.screen_account_queue_ms`` 1000 (the default);
- ``none``: 0 (every screening straight to the classifier, as before);
- ``no_probation``: turns, with ``gate.probation_requests`` 0 (every account, fresh ones
  included, gets ``screen_deadline_ms``; ``turns`` and ``none`` keep the policy's probation, so
  each fresh account's first 5 screenings get ``probation_screen_deadline_ms``);
- ``flat_deadline``: turns, with ``gate.deadline_ms_per_1000_chars`` 0 (the deadline no longer
  grows with the prompt, as before policy default-2026.12.11).

Each burst: a fresh account sends 12 requests at once (100-500 characters); meanwhile a second
fresh account sends single requests, one after another, every 20 ms for 200 ms. Reported per
mode: the share of the burst screened before serving (no fallback), the second account's
screening latency (``admit``, p50/p99) and the share of its requests screened; and, as the
floor, the second account's latency with no burst.

2026-12-06, 2 cores under other work (load ~4, run at nice 15; one screening alone took ~40 ms,
so at the default 40 ms deadline half of even single screenings missed: burst screened 0.14 with
turns, 0.04 without). With ``--screen-deadline-ms 150``: the burst screened 1.0 with turns, 0.27
without; the second account screened 1.0 vs 0.85, p50/p99 72/127 ms vs 40/157 ms (alone:
41/80 ms). Without turns the burst fails open at once and leaves the classifier to the later
singles (lower p50); with turns it is screened one request at a time for ~0.9 s, the second
account sharing the classifier with one of its requests, never queued behind all twelve.

2026-12-06, later (the same machine, load 3-4, nice 15, ``--rounds 2``, default 40 ms), with new
accounts' probation (their first 5 screenings wait up to 250 ms): the burst screened 0.77 with
it vs 0.55 without (``no_probation``, 1.41x), the second account 0.75 vs 0.40, its p50/p99
37.9/63.3 ms vs 41.2/57.8 ms (0.92x/1.09x); without turns 0.45 (alone: 24/56 ms, 0.94).

    python benchmarks/screen_burst.py [--rounds 3] [--bursts 10] [--screen-deadline-ms MS]
                                      [--scale N]

Last line: {"<mode>_burst_screened", "<mode>_other_p50_ms", "<mode>_other_p99_ms",
"<mode>_other_screened" for each mode (turns, none, no_probation, flat_deadline),
"alone_other_p50_ms", "alone_other_p99_ms", "alone_other_screened", "turns_burst_wait_max_ms",
"screen_deadline_ms", "deadline_ms_per_1000_chars", "scale", "provider", "runs"}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import nats
from classifier_service import nats_server  # type: ignore[import-not-found]

from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.classifier.loader import load_model
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import MicroBatchScorer
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.front_end_config import FrontEndConfig
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.inline_gate import InlineGate
from safeguards.core.policy import Policy, default_policy

WORDS = ("the", "of", "to", "process", "request", "account", "weapon", "story", "code", "python",
         "medical", "system", "kill", "data", "patient", "dose", "server", "thread", "chapter",
         "villain", "history", "exploit", "policy")
BURST = 12
OTHER_EVERY_S, OTHER_SPAN_S = 0.02, 0.2


def _body(rnd: random.Random, chars: int, sentences: bool = False) -> bytes:
    words = [rnd.choice(WORDS) for _ in range(chars // 6)]
    if sentences:  # as long prompts are written (the classifier reads sentences alone too)
        words = [w + "." if i % 12 == 11 else w for i, w in enumerate(words)]
    text = " ".join(words) + f" {rnd.random():.6f}"
    return json.dumps({"model": "claude-bench", "max_tokens": 10,
                       "messages": [{"role": "user", "content": text}]}).encode()


def _policy(queue_ms: float, deadline_ms: float | None = None,
            probation: int | None = None, per_1000_chars: float | None = None) -> Policy:
    policy = default_policy()
    base = policy.gate
    return replace(policy, gate=replace(
        base, screen_first_stage=False, screen_account_queue_ms=queue_ms,
        screen_deadline_ms=deadline_ms or base.screen_deadline_ms,
        probation_requests=base.probation_requests if probation is None else probation,
        deadline_ms_per_1000_chars=(base.deadline_ms_per_1000_chars if per_1000_chars is None
                                    else per_1000_chars)))


async def _screen(admission: Admission, account: str, body: bytes) -> tuple[bool, float]:
    """Whether it was screened before serving (no fallback), and how long ``admit`` took."""
    t0 = time.perf_counter()
    admitted = await admission.admit(Caller(account), body, "proxy")
    return admitted.request.fallback is None, (time.perf_counter() - t0) * 1000


async def one_burst(admission: Admission, rnd: random.Random, tag: str, *, burst: bool,
                    scale: int = 1) -> tuple[list[bool], list[bool], list[float]]:
    """The burst's screened flags, the other account's screened flags and latencies (ms);
    ``scale``: prompt lengths times this, written in sentences when over 1."""
    burst_screened: list[bool] = []
    other_screened: list[bool] = []
    other_ms: list[float] = []
    bodies = [_body(rnd, scale * rnd.choice((100, 200, 300, 500)), scale > 1)
              for _ in range(BURST)]
    other = f"other-{tag}"

    async def one(body: bytes) -> None:
        screened, _ = await _screen(admission, f"burst-{tag}", body)
        burst_screened.append(screened)

    async def singles() -> None:
        started = time.perf_counter()
        for i in range(int(OTHER_SPAN_S / OTHER_EVERY_S)):
            await anyio.sleep(max(0.0, started + i * OTHER_EVERY_S - time.perf_counter()))
            screened, ms = await _screen(admission, other, _body(rnd, scale * 300, scale > 1))
            other_screened.append(screened)
            other_ms.append(ms)

    async with anyio.create_task_group() as tg:
        if burst:
            for body in bodies:
                tg.start_soon(one, body)
        tg.start_soon(singles)
    await anyio.sleep(0.3)  # the classifier drained before the next burst
    return burst_screened, other_screened, other_ms


@contextlib.asynccontextmanager
async def region_up(url: str) -> AsyncIterator[tuple[InlineGate, str]]:
    """A fresh region's gate with its classifier serving, and the model's provider."""
    region = "b" + secrets.token_hex(3)
    model = load_model()
    nc = await nats.connect(url, connect_timeout=5)
    try:
        async with MicroBatchScorer(model) as scorer, anyio.create_task_group() as tg:
            service = ClassifierService(nc, region, scorer, ClassifierSettings(partitions=16),
                                        producer=load_producer_keys(region))
            await tg.start(service.run)
            inline = InlineGate(_policy(1000), FrontEndConfig(region=region, nats_url=url,
                                                              caller_auth="loopback"),
                                connection_name="screen-burst", provision_streams=True)
            async with inline.running():
                if inline.feed is not None:
                    with anyio.fail_after(20):
                        await inline.feed.ready.wait()
                yield inline, model.provider
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def run(url: str, rounds: int, bursts: int, deadline_ms: float | None,
              scale: int = 1) -> dict[str, object]:
    # mode: (screen_account_queue_ms, probation_requests, deadline_ms_per_1000_chars; None:
    # the policy's)
    modes: dict[str, tuple[float, int | None, float | None]] = {
        "turns": (1000.0, None, None), "none": (0.0, None, None),
        "no_probation": (1000.0, 0, None), "flat_deadline": (1000.0, None, 0.0)}
    screened: dict[str, list[bool]] = {m: [] for m in modes}
    other_ok: dict[str, list[bool]] = {m: [] for m in (*modes, "alone")}
    other_ms: dict[str, list[float]] = {m: [] for m in (*modes, "alone")}
    runs: list[dict[str, object]] = []
    async with region_up(url) as (inline, provider):
        admission = inline.admission
        rnd = random.Random(0)
        for i in range(20):  # the model's first inferences are slow
            await _screen(admission, f"warm-{i}", _body(rnd, 300))
        await one_burst(admission, rnd, "warm", burst=True)
        for r in range(rounds):
            for mode in (*modes, "alone"):
                queue_ms, probation, per_1000 = modes.get(mode, (1000.0, None, None))
                inline.gate.set_policy(_policy(queue_ms, deadline_ms, probation, per_1000))
                ok: list[bool] = []
                for b in range(bursts):
                    got, other, ms = await one_burst(admission, rnd, f"{mode}-{r}-{b}",
                                                     burst=mode != "alone", scale=scale)
                    ok += got
                    other_ok[mode] += other
                    other_ms[mode] += ms
                if mode in screened:
                    screened[mode] += ok
                run = {"round": r, "mode": mode,
                       "burst_screened": round(sum(ok) / len(ok), 3) if ok else None,
                       "other_p50_ms": round(statistics.median(other_ms[mode]), 2)}
                runs.append(run)
                print(run, flush=True)
        waited = admission.screen_turns.waited_s_max
    out: dict[str, object] = {}
    for mode in modes:
        out[f"{mode}_burst_screened"] = round(sum(screened[mode]) / len(screened[mode]), 3)
    for mode in (*modes, "alone"):
        out[f"{mode}_other_p50_ms"] = round(statistics.median(other_ms[mode]), 2)
        out[f"{mode}_other_p99_ms"] = round(_p99(other_ms[mode]), 2)
        out[f"{mode}_other_screened"] = round(sum(other_ok[mode]) / len(other_ok[mode]), 3)
    out["turns_burst_wait_max_ms"] = round(waited * 1000, 1)
    out["screen_deadline_ms"] = deadline_ms or default_policy().gate.screen_deadline_ms
    out["deadline_ms_per_1000_chars"] = default_policy().gate.deadline_ms_per_1000_chars
    out["scale"] = scale
    out["provider"] = provider
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--scale", type=int, default=1,
                        help="prompt lengths times this, written in sentences (4: the burst's "
                             "400-2,000 characters, the other account's 1,200)")
    parser.add_argument("--screen-deadline-ms", type=float, default=None,
                        help="instead of the default policy's (40 ms): a busier machine's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys, nats_server() as url:
        os.environ.setdefault("SAFEGUARDS_STATE_DIR", keys)  # this run's region keys, not var/
        result = anyio.run(run, url, args.rounds, args.bursts, args.screen_deadline_ms,
                           max(1, args.scale))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
