"""The gates' inline scoring while the content stream keeps the classifier busy, on this CPU.

One process, the default model, an inline scorer timed one request at a time (a 300-character
prompt every 20 ms, as screening sends them) in three modes, alternating rounds:

- ``alone``: nothing else scoring (the floor);
- ``shared``: a stream scorer saturated with 400-character content beside it, as before the
  lane (its own queue, batches of up to 64 windows, both on the same cores);
- ``lane``: the same load through ``stream_and_inline_scorers`` (stream batches of 4 on CPU,
  each waiting its turn while inline work is in progress).

Reports inline p50/p99 per mode and the stream's texts/s while the inline traffic runs. Then a
burst: 12 screening requests at once (100-500 characters, each abandoned at the gate's 40 ms
screening deadline), 10 times, through an inline scorer in batches of up to 64 windows and in
batches of 2: the share answered in time (2026-12-06, idle: 0.29 and 0.33, within each other's
spread, so the inline scorer kept its batches; on 2 cores a burst of a dozen mostly fails open;
``benchmarks/screen_burst.py`` measures the same burst through admission with per-account turns).

    python benchmarks/inline_priority.py [--rounds 3] [--requests 100]

Last line: {"alone_p50_ms", "alone_p99_ms", "shared_p50_ms", "shared_p99_ms", "lane_p50_ms",
"lane_p99_ms", "shared_stream_per_s", "lane_stream_per_s", "burst_in_time_batch64",
"burst_in_time_batch2", "runs"}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import anyio

from safeguards.adapters.classifier.loader import LoadedModel, load_model
from safeguards.adapters.classifier.scorer import (
    MicroBatchScorer,
    ScorerConfig,
)
from safeguards.adapters.classifier.scorer_pair import stream_and_inline_scorers

WORDS = ("the", "of", "to", "process", "request", "account", "weapon", "story", "code", "python",
         "medical", "system", "kill", "data", "patient", "dose", "server", "thread", "chapter",
         "villain", "history", "exploit", "policy")


def _text(rnd: random.Random, chars: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(chars // 6)) + f" {rnd.random():.6f}"


async def one_round(model: LoadedModel, mode: str, requests: int, seed: int
                    ) -> tuple[list[float], float]:
    """Inline latencies (ms) and the stream's texts/s over the timed span."""
    rnd = random.Random(seed)
    if mode == "lane":
        stream, inline = stream_and_inline_scorers(model)
    else:
        stream, inline = MicroBatchScorer(model), MicroBatchScorer(model)
    latencies: list[float] = []
    streamed = 0
    async with stream, inline:
        stop = anyio.Event()

        async def feed_stream() -> None:
            nonlocal streamed

            async def one() -> None:
                nonlocal streamed
                await stream.score(_text(rnd, 400))
                streamed += 1

            while not stop.is_set():
                async with anyio.create_task_group() as tg:
                    for _ in range(64):
                        tg.start_soon(one)

        async with anyio.create_task_group() as tg:
            if mode != "alone":
                tg.start_soon(feed_stream)
                await anyio.sleep(1.0)  # the stream's queue full before timing starts
            started, streamed_before = time.perf_counter(), streamed
            for _ in range(requests):
                t0 = time.perf_counter()
                await inline.score(_text(rnd, 300))
                latencies.append((time.perf_counter() - t0) * 1000)
                await anyio.sleep(0.02)
            rate = (streamed - streamed_before) / (time.perf_counter() - started)
            stop.set()
    return latencies, rate


async def burst_in_time(scorer: MicroBatchScorer, seed: int, rounds: int = 10,
                        size: int = 12, deadline_s: float = 0.04) -> float:
    """The share of ``size`` simultaneous requests answered within ``deadline_s``."""
    rnd = random.Random(seed)
    in_time = 0

    async def one() -> None:
        nonlocal in_time
        with anyio.move_on_after(deadline_s):
            await scorer.score(_text(rnd, rnd.choice((100, 200, 300, 500))))
            in_time += 1

    async with scorer:
        await scorer.score(_text(rnd, 200))  # warm
        for _ in range(rounds):
            async with anyio.create_task_group() as tg:
                for _ in range(size):
                    tg.start_soon(one)
            await anyio.sleep(0.3)
    return in_time / (rounds * size)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    model = load_model()
    await one_round(model, "alone", 10, 0)  # warm the session
    modes = ("alone", "shared", "lane")
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    runs = []
    for r in range(args.rounds):
        for mode in modes:
            lat, rate = await one_round(model, mode, args.requests, seed=r)
            latencies[mode] += lat
            rates[mode].append(rate)
            run = {"round": r, "mode": mode, "p50_ms": round(statistics.median(lat), 2),
                   "p99_ms": round(_p99(lat), 2), "stream_per_s": round(rate, 1)}
            runs.append(run)
            print(run, flush=True)
    out: dict[str, object] = {}
    for mode in modes:
        out[f"{mode}_p50_ms"] = round(statistics.median(latencies[mode]), 2)
        out[f"{mode}_p99_ms"] = round(_p99(latencies[mode]), 2)
    out["shared_stream_per_s"] = round(statistics.median(rates["shared"]), 1)
    out["lane_stream_per_s"] = round(statistics.median(rates["lane"]), 1)
    bursts: dict[str, list[float]] = {"batch64": [], "batch2": []}
    for r in range(args.rounds):
        bursts["batch64"].append(await burst_in_time(MicroBatchScorer(model), seed=r))
        bursts["batch2"].append(await burst_in_time(
            MicroBatchScorer(model, ScorerConfig(max_batch=2)), seed=r))
        print({"round": r, **{k: v[-1] for k, v in bursts.items()}}, flush=True)
    out["burst_in_time_batch64"] = round(statistics.median(bursts["batch64"]), 3)
    out["burst_in_time_batch2"] = round(statistics.median(bursts["batch2"]), 3)
    out["provider"] = model.provider
    out["runs"] = runs
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main)
