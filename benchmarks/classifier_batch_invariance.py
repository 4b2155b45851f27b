"""Does a text's classifier score depend on what else is in its batch?

Scores a fixed set of texts (every prompt the simulation personas can send, and prompt-sized cuts
of generated prose) once each alone and once inside random batches of other texts, for each
graph variant asked for, and compares: per label, the largest |difference| of calibrated scores
between a text alone and in a batch, how many strike decisions (score >= the label's threshold)
flip, and the same against the fp32 graph's scores alone (the reference). Ends with one JSON line
``{variant: {"batch_max_abs": {label: x}, "batch_flips": n, "fp32_max_abs": {label: x},
"fp32_mean_abs": x, "fp32_flips": n}}``.

    python benchmarks/classifier_batch_invariance.py [--variants int8,fp32] [--prose 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
from collections.abc import Sequence
from typing import cast

import numpy as np

from safeguards.adapters.classifier.encoder.build import Variant
from safeguards.adapters.classifier.loader import LoadedModel, load_model
from safeguards.adapters.classifier_training import longform
from safeguards.simulations.personas import load_personas


def persona_prompts() -> list[str]:
    """Every prompt a persona's templates can produce (each slot filled every way)."""
    out: set[str] = set()
    for persona in load_personas():
        for prompt in persona.prompts:
            slots = sorted(set(re.findall(r"{(\w+)}", prompt.template)))
            for values in itertools.product(*(persona.vars.get(s, ("",)) for s in slots)):
                out.add(prompt.template.format(**dict(zip(slots, values, strict=True))))
    return sorted(out)


def texts(n_prose: int, seed: int = 3) -> list[str]:
    """The persona prompts and ``n_prose`` cuts of 40 to 600 characters of generated prose."""
    return persona_prompts() + longform.prose_cuts(n_prose, seed=seed, max_chars=600)


def alone(model: LoadedModel, items: Sequence[str]) -> np.ndarray:
    return np.vstack([model.predict([t]) for t in items])


def batched(model: LoadedModel, items: Sequence[str], seed: int) -> np.ndarray:
    """Each text scored once inside a random batch of 2 to 64 texts of the set."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    out = np.zeros((len(items), len(model.manifest.labels)))
    start = 0
    while start < len(order):
        chunk = order[start : start + rng.randint(2, 64)]
        out[chunk] = model.predict([items[k] for k in chunk])
        start += len(chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="int8,fp32")
    parser.add_argument("--prose", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=2, help="random batchings per variant")
    args = parser.parse_args()
    items = texts(args.prose)
    variants = [cast(Variant, v) for v in args.variants.split(",")]
    if "fp32" not in variants:
        variants.append("fp32")
    variants.sort(key=lambda v: v != "fp32")  # the reference first
    reference: np.ndarray | None = None
    report: dict[str, dict[str, object]] = {}
    for variant in variants:
        model = load_model(allow_gpu=False, variant=variant, intra_op_threads=1)
        labels = [lab.category for lab in model.manifest.labels]
        thresholds = np.asarray([lab.threshold for lab in model.manifest.labels])
        solo = alone(model, items)
        if reference is None:
            reference = solo
        worst = np.zeros(len(labels))
        flips = 0
        for seed in range(args.seeds):
            mixed = batched(model, items, seed)
            worst = np.maximum(worst, np.abs(mixed - solo).max(axis=0))
            flips += int(((mixed >= thresholds) != (solo >= thresholds)).sum())
        ref = np.abs(solo - reference)
        report[variant] = {
            "batch_max_abs": dict(zip(labels, np.round(worst, 6).tolist(), strict=True)),
            "batch_flips": flips,
            "fp32_max_abs": dict(zip(labels, np.round(ref.max(axis=0), 6).tolist(),
                                     strict=True)),
            "fp32_mean_abs": round(float(ref.mean()), 6),
            "fp32_flips": int(((solo >= thresholds) != (reference >= thresholds)).sum()),
        }
        print(f"{variant}: {len(items)} texts x {len(labels)} labels, {args.seeds} batchings: "
              f"alone vs batch max |d| {worst.max():.4f}, {flips} strike flips; vs fp32 alone "
              f"max |d| {ref.max():.4f}, mean {ref.mean():.5f}, "
              f"{report[variant]['fp32_flips']} flips")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
