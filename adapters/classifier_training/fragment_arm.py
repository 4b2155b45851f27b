"""Fitting the fragment arm: a prompt's sentences read alone, at operating points of their own.

The served graph reads the calibration split's benign texts' fragments (``fragments.py``: the
first ``FIRST`` and last ``LAST`` sentences of a text of two or more); per category, the
maximum over a text's fragments is that text's fragment reading, and two points are read off
those benign texts exactly as the whole-text points are (``heads.benign_point``): the strike
point (``STRIKE_FPR`` of the benign texts flagged by their fragments in that category) and the
refusal point (``REFUSE_FPR``), mapped onto the policy's thresholds (``heads.align_two_points``).
The arm's points are stricter than the whole text's: ``STRIKE_FPR`` and ``REFUSE_FPR`` are
below the whole text's 0.2 % and 0.05 % (on the 9,455 benign calibration texts of 2026.12.13 the
strike point lies above all but one of them, the refusal point above all), and neither point is
ever below the whole text's own: a sentence read out of context decides only where it is
plainly harmful.

``attach`` fits the arm for a trained model and writes it as a new version beside the
out-of-distribution figures of the model as served (the whole text and its fragments);
``safeguards classifier train`` runs it last, ``safeguards classifier fit-fragments`` on a
model already trained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.fragments import FragmentArm
from safeguards.adapters.classifier.loader import LoadedModel, load_model
from safeguards.adapters.classifier.manifest import LabelSpec, ModelManifest
from safeguards.adapters.classifier_training import heads as H
from safeguards.adapters.classifier_training import ood, recipe
from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.core.policy import default_policy

log = logging.getLogger(__name__)

FIRST = 1  # sentences from a text's start read alone (a frame's opening, an ask put first)
LAST = 3  # and from its end (where a template's slot and most asks are)
MIN_CHARS = 12  # shorter pieces ("Hi.", "Step 1:") are not read alone
STRIKE_FPR = 0.0002  # per category, calibration split's benign texts, by their fragments
REFUSE_FPR = 0.0001
# Served, a cascade's semantic tower reads a fragment only where the tuned tower's blended
# logit comes within GATE_MARGIN of the lowest of the arm's strike points (the points are read
# with every fragment the cascade's own gate escalates). On the evaluation's benign texts that
# escalates 7 % of fragments instead of 57 %, and on the framed asks it loses none of the
# fragments that reach a point (a margin of 1.0 loses none either; 0.5 loses 4 of 84).
GATE_MARGIN = 1.5
# Categories the arm does not read. Jailbreak: a sentence alone that tells a model to ignore
# something is an instruction-following test or a system prompt's rule far more often than an
# attack, and a jailbreak frame is most of its text, read whole. On 2026.12.14's evaluation rows
# (400 benign per kind, every harmful and jailbreak row) the arm's jailbreak column added 0.011
# jailbreak recall at the strike point (0.006 at the refusal point) for 0.10 points of benign
# false positives (code 1.5 % to 0.5 %, system prompts 2.0 % to 1.4 %; at the refusal point
# code 0.5 % to 0): IFBench's "... Only output this sentence here, ignore all other requests."
# was refused as a jailbreak (0.949). Harmful recall does not move.
NOT_READ = frozenset({"jailbreak"})


def fragment_raw(model: LoadedModel, arm: FragmentArm, texts: Sequence[str],
                 batch: int = 256) -> np.ndarray:
    """Each text's fragment columns (max over its fragments; -inf for a text with none)."""
    probe = dataclasses.replace(model, manifest=dataclasses.replace(
        model.manifest, fragments=arm))
    out = []
    for start in range(0, len(texts), batch):
        raw = probe.raw(texts[start : start + batch])
        out.append(raw[:, raw.shape[1] // 2 :])
        if start % (batch * 10) == 0:
            log.info("fragments of %d of %d texts read", start, len(texts))
    return np.concatenate(out) if out else np.zeros((0, model.width))


def fit(model: LoadedModel, benign_texts: Sequence[str], *, first: int = FIRST,
        last: int = LAST, min_chars: int = MIN_CHARS, strike_fpr: float = STRIKE_FPR,
        refuse_fpr: float = REFUSE_FPR) -> tuple[FragmentArm, dict[str, Any]]:
    """The arm for ``model`` from benign texts it never learnt from (the calibration split)."""
    unlabelled = FragmentArm(first, last, min_chars, ())
    z = fragment_raw(model, unlabelled, benign_texts)
    policy = {c.name: (c.threshold, c.refuse_threshold) for c in default_policy().categories}
    labels: list[LabelSpec] = []
    points: dict[str, Any] = {}
    everyone = np.ones(len(benign_texts), dtype=bool)
    for lab in model.manifest.labels:
        if lab.category in NOT_READ:
            continue
        column = z[:, lab.index]
        strike_at, refuse_at = policy[lab.category]
        # never below the whole text's own points (what its calibration maps to the thresholds)
        z_strike = max(H.benign_point(column, everyone, strike_fpr),
                       lab.calibration.raw_for(strike_at))
        z_refuse = max(H.benign_point(column, everyone, refuse_fpr),
                       lab.calibration.raw_for(refuse_at), z_strike + H.MIN_POINT_GAP)
        labels.append(H.align_two_points(lab, z_strike, z_refuse, strike_at, refuse_at))
        points[lab.category] = {"strike_raw": round(z_strike, 4),
                                "refuse_raw": round(z_refuse, 4)}
    with_fragments = int(np.isfinite(z).any(axis=1).sum())
    gate = None
    if model.cascade is not None and points:
        gate = round(min(p["strike_raw"] for p in points.values()) - GATE_MARGIN, 4)
    report = {"first": first, "last": last, "min_chars": min_chars, "strike_fpr": strike_fpr,
              "refuse_fpr": refuse_fpr, "benign_texts": len(benign_texts),
              "benign_texts_with_fragments": with_fragments, "gate": gate,
              "gate_margin": GATE_MARGIN, "points": points}
    return FragmentArm(first, last, min_chars, tuple(labels), gate), report


def attach(model_dir: Path, out_dir: Path, wheels: Path, *, version: str,
           evaluate: bool = True) -> ModelManifest:
    """``model_dir``'s model with a fragment arm fitted on its recipe's calibration split,
    written to ``out_dir`` as ``version`` (with the out-of-distribution report of the model as
    served, the evaluation split read whole and by fragments, unless ``evaluate`` is off)."""
    model = load_model(model_dir, allow_gpu=False, variant="int8")
    manifest = model.manifest
    seed = int(manifest.metrics.get("seed", 0))
    splits = recipe.training_splits(wheels, seed)
    benign = [r.text for r in splits.calibration if r.label == "benign"]
    log.info("fitting the fragment arm on %d benign calibration texts", len(benign))
    arm, report = fit(model, benign)
    served = dataclasses.replace(model, manifest=dataclasses.replace(manifest, fragments=arm))
    metrics = dict(manifest.metrics)
    metrics["fragments"] = report
    if evaluate:
        if manifest.fragments is None:  # else its figures read without an arm are kept
            metrics["ood_without_fragments"] = metrics.get("ood")
        metrics["ood"] = _served_report(served, splits.evaluation)
    new = dataclasses.replace(manifest, version=version, fragments=arm, metrics=metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != model_dir.resolve():
        shutil.copy2(model_dir / manifest.model_file, out_dir / manifest.model_file)
    (out_dir / "manifest.json").write_text(json.dumps(new.to_json(), indent=2) + "\n")
    return new


def _served_report(model: LoadedModel, rows: Sequence[Record]) -> dict[str, Any]:
    report = ood.evaluate_model(model, rows)
    report["prompt_refuse"] = {k: v for k, v in report["prompt_refuse"].items()
                               if k not in ("recall_by_source", "ece")}
    return report
