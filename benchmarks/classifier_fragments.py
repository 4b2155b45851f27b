"""What the fragment arm costs on the inline path: one prompt scored alone, with and without it.

The shipped model is loaded once; the same session is read as served (whole text and its
fragments, ``manifest.fragments``) and as the whole text alone (the arm taken off the manifest).
Prompt-sized texts (40 to 400 characters of generated prose, as ``benchmarks/classifier.py``)
and 1,000-character ones are scored one at a time, the way a gate screens a request, the two
arms alternating text by text so that load from elsewhere on a shared machine falls on both
alike. The 1,000-character texts are also scored as a completion (``kind="completion"``, the
served model): a completion's score never uses the arm, so it should cost what the whole text
alone does (before 2026-12-07 the scorer computed its fragments as well and threw them away).
Reports per arm and size the p50 and p99 latency and the mean fragments per text, then
one JSON line: ``{"model", "version", "prompt_p50_ms", "prompt_p99_ms", "prompt_whole_p50_ms",
"prompt_whole_p99_ms", "prompt_p50_ratio", "long_p50_ms", "long_p99_ms", "long_whole_p50_ms",
"long_whole_p99_ms", "long_p50_ratio", "long_completion_p50_ms", "long_completion_p99_ms",
"fragments_per_prompt", "texts"}``.

    python benchmarks/classifier_fragments.py [--texts 300] [--model DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR, LoadedModel, load_model
from safeguards.adapters.classifier_training import longform

Arm = tuple[LoadedModel, str]  # a model and the kind of content it scores the text as


def timed(arm: Arm, text: str) -> float:
    model, kind = arm
    started = time.perf_counter()
    model.predict([text], kind)
    return (time.perf_counter() - started) * 1000


def measure(arms_by_name: dict[str, Arm], texts: list[str]) -> dict[str, float]:
    arms: dict[str, list[float]] = {name: [] for name in arms_by_name}
    names = list(arms_by_name)
    for i, text in enumerate(texts):
        for name in names[i % len(names):] + names[:i % len(names)]:  # each goes first in turn
            arms[name].append(timed(arms_by_name[name], text))
    out = {}
    for name, values in arms.items():
        out[f"{name}_p50"] = round(float(np.percentile(values, 50)), 3)
        out[f"{name}_p99"] = round(float(np.percentile(values, 99)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--texts", type=int, default=300, help="texts per size")
    args = ap.parse_args()
    served = load_model(args.model, allow_gpu=False, intra_op_threads=0)
    arm = served.manifest.fragments
    if arm is None:
        raise SystemExit(f"{args.model} has no fragment arm")
    whole = dataclasses.replace(served, manifest=dataclasses.replace(served.manifest,
                                                                     fragments=None))
    prompts = longform.prose_cuts(args.texts, seed=11)
    long_texts = longform.prose_cuts(args.texts // 3, seed=12, min_chars=900, max_chars=1000)
    for text in prompts[:20]:  # warm the session and the allocator
        served.predict([text])
    prompt = measure({"served": (served, "prompt"), "whole": (whole, "prompt")}, prompts)
    long = measure({"served": (served, "prompt"), "whole": (whole, "prompt"),
                    "completion": (served, "completion")}, long_texts)
    per_prompt = float(np.mean([len(arm.split(t)) for t in prompts]))
    print(f"{served.name} {served.version} on {served.provider} ({served.variant})")
    print(f"  prompts (40-400 chars, {per_prompt:.2f} fragments each): served p50 "
          f"{prompt['served_p50']} ms p99 {prompt['served_p99']} ms; whole alone p50 "
          f"{prompt['whole_p50']} ms p99 {prompt['whole_p99']} ms")
    print(f"  1,000 chars: served p50 {long['served_p50']} ms p99 {long['served_p99']} ms; "
          f"whole alone p50 {long['whole_p50']} ms p99 {long['whole_p99']} ms; as a completion "
          f"p50 {long['completion_p50']} ms p99 {long['completion_p99']} ms")
    print(json.dumps({
        "model": served.name, "version": served.version,
        "prompt_p50_ms": prompt["served_p50"], "prompt_p99_ms": prompt["served_p99"],
        "prompt_whole_p50_ms": prompt["whole_p50"], "prompt_whole_p99_ms": prompt["whole_p99"],
        "prompt_p50_ratio": round(prompt["served_p50"] / prompt["whole_p50"], 3),
        "long_p50_ms": long["served_p50"], "long_p99_ms": long["served_p99"],
        "long_whole_p50_ms": long["whole_p50"], "long_whole_p99_ms": long["whole_p99"],
        "long_p50_ratio": round(long["served_p50"] / long["whole_p50"], 3),
        "long_completion_p50_ms": long["completion_p50"],
        "long_completion_p99_ms": long["completion_p99"],
        "fragments_per_prompt": round(per_prompt, 3), "texts": len(prompts) + len(long_texts),
    }))


if __name__ == "__main__":
    main()
