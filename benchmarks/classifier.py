"""Classifier throughput on the CPU: micro-batched scorer vs one inference call per request.

Same model, same texts, same concurrency, same run. The per-request arm is the same scorer with
``max_batch=1`` (every request is its own ONNX Runtime call); the batched arm lets requests that
arrive together share a call. The arms alternate over several rounds and each reports its median
round, so load from other processes on a shared machine skews both alike. Then one 1,000-character
text is scored alone, many times, with every core (the inline path's case). Prints both arms'
throughput and latency, then one JSON line:
``{"batched_per_s", "per_request_per_s", "ratio", "provider", "model",
"alone_1000_chars_p50_ms", "alone_1000_chars_p99_ms", "escalated_windows"}``.

    python benchmarks/classifier.py [--requests 4000] [--concurrency 256] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anyio
import numpy as np

from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR, LoadedModel, load_model
from safeguards.adapters.classifier.scorer import MicroBatchScorer, ScorerConfig
from safeguards.adapters.classifier_training import longform


def workload(n: int, seed: int = 7) -> list[str]:
    """Prompt-sized texts (40 to 400 characters) cut from generated prose, deterministic."""
    return longform.prose_cuts(n, seed=seed)


async def run_arm(model: LoadedModel, config: ScorerConfig, texts: list[str],
                  concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    next_index = 0
    async with MicroBatchScorer(model, config) as scorer:
        async def client() -> None:
            nonlocal next_index
            while next_index < len(texts):
                text = texts[next_index]
                next_index += 1
                t0 = time.perf_counter()
                await scorer.score(text)
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(client)
        elapsed = time.perf_counter() - started
        mean_batch = scorer.stats.mean_batch
    lat = np.array(latencies) * 1000
    return {"per_s": len(texts) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_batch": mean_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per arm")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads (0: one per core)")
    parser.add_argument("--alone-rounds", type=int, default=300,
                        help="repetitions of the one-text latency measurement")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                        help="model directory (default: the shipped model)")
    args = parser.parse_args()

    model = load_model(args.model, intra_op_threads=args.threads)
    texts = workload(args.requests)
    print(f"model {model.name} {model.version} on {model.provider}; {len(texts)} requests, "
          f"mean {sum(map(len, texts)) / len(texts):.0f} chars, concurrency {args.concurrency}")
    model.predict(texts[:64])  # warm up

    per_request_cfg = ScorerConfig(max_batch=1, max_wait_s=0.0)
    batched_cfg = ScorerConfig(max_batch=64, max_wait_s=0.002)
    rounds: dict[str, list[dict[str, float]]] = {"per-request": [], "micro-batched": []}
    for _ in range(args.rounds):
        rounds["per-request"].append(
            anyio.run(run_arm, model, per_request_cfg, texts, args.concurrency))
        rounds["micro-batched"].append(
            anyio.run(run_arm, model, batched_cfg, texts, args.concurrency))
    median: dict[str, dict[str, float]] = {}
    for name, results in rounds.items():
        results.sort(key=lambda r: r["per_s"])
        median[name] = r = results[len(results) // 2]
        print(f"{name:>14}: {r['per_s']:8.0f} texts/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  mean batch {r['mean_batch']:.1f}  "
              f"(rounds: {', '.join(str(round(x['per_s'])) for x in results)})")
    per_request, batched = median["per-request"], median["micro-batched"]

    # the same comparison without the scorer: raw ONNX Runtime calls, for reference
    t0 = time.perf_counter()
    for t in texts[:1000]:
        model.predict([t])
    raw_single = 1000 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, 1000, 64):
        model.predict(texts[i : i + 64])
    raw_batched = 1000 / (time.perf_counter() - t0)
    print(f"raw ONNX Runtime: {raw_single:.0f} texts/s one by one, "
          f"{raw_batched:.0f} texts/s in batches of 64")

    alone = one_text_alone(args.model, args.alone_rounds)
    print(f"one 1,000-character text alone ({alone['threads']} threads): "
          f"p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.2f} ms")

    print(json.dumps({
        "batched_per_s": round(batched["per_s"], 1),
        "per_request_per_s": round(per_request["per_s"], 1),
        "ratio": round(batched["per_s"] / per_request["per_s"], 2),
        "provider": model.provider,
        "model": f"{model.name} {model.version} ({model.variant})",
        "alone_1000_chars_p50_ms": alone["p50_ms"],
        "alone_1000_chars_p99_ms": alone["p99_ms"],
        # a cascade model: the share of windows its second tower read
        "escalated_windows": round(model.cascade.stats.escalated
                                   / max(1, model.cascade.stats.windows), 4)
        if model.cascade is not None else None,
    }))


def one_text_alone(directory: Path, rounds: int) -> dict[str, float]:
    """A 1,000-character prompt scored by itself, as the inline path does for one request:
    every core on it (ONNX Runtime's default), windows and tokenisation included."""
    model = load_model(directory, intra_op_threads=0)
    text = workload(1, seed=11)[0]
    while len(text) < 1000:
        text += " " + workload(1, seed=len(text))[0]
    text = text[:1000]
    for _ in range(5):
        model.predict([text])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        model.predict([text])
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.median(ms)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "threads": 0}


if __name__ == "__main__":
    main()
