"""Heads on the encoder's pooled embedding: fitting, calibration, operating points, export.

A text is scored as the maximum over its windows (``encoder/windows.py``), so the heads are fitted
on windows: every window of a benign text is a negative (a long benign document must be clean
everywhere), and the first and last windows of a harmful one are positives.

Each category's raw score is turned into a probability by Platt scaling fitted on the
*calibration* rows (never the rows the heads learned from), class-balanced: 0.5 means as likely
harmful as not under equal priors.

The default model aligns its scores with the policy (``align_two_points``): two operating points
per category, both read off the calibration benign texts' raw scores (``benign_point``), the
strike point (at most 0.2 % of them flagged) and the refusal point (0.05 %), are mapped onto the
policy's ``threshold`` and ``refuse_threshold`` by one increasing logistic map; the served score
is then a policy-aligned score (what 0.6 and 0.9 mean is fixed by held-out benign text), not a
probability.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from safeguards.adapters.classifier.manifest import Calibration, LabelSpec


@dataclass(frozen=True, slots=True)
class HeadSet:
    """Trained heads as tensors the graph builder reads (``heads.*``) and their label order."""

    categories: tuple[str, ...]
    hidden_weight: np.ndarray | None  # [features, hidden]
    hidden_bias: np.ndarray | None
    out_weight: np.ndarray  # [hidden or features, labels]
    out_bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = features
        if self.hidden_weight is not None and self.hidden_bias is not None:
            x = np.maximum(0.0, x @ self.hidden_weight + self.hidden_bias)
        out: np.ndarray = x @ self.out_weight + self.out_bias
        return out


def normalized(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


def fit_linear_heads(x: np.ndarray, y: np.ndarray, categories: Sequence[str], *,
                     c: float, seed: int, weights: np.ndarray | None = None) -> HeadSet:
    """One class-balanced logistic regression per category (columns of ``y``)."""
    from sklearn.linear_model import LogisticRegression

    w = np.zeros((x.shape[1], len(categories)), np.float32)
    b = np.zeros(len(categories), np.float32)
    for j in range(len(categories)):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000,
                                   random_state=seed)
        model.fit(x, y[:, j], sample_weight=weights)
        w[:, j] = model.coef_[0]
        b[j] = model.intercept_[0]
    return HeadSet(tuple(categories), None, None, w, b)


def fit_mlp_heads(x: np.ndarray, y: np.ndarray, categories: Sequence[str], *, hidden: int,
                  alpha: float, seed: int, epochs: int = 60) -> HeadSet:
    """A shared ReLU hidden layer with one sigmoid output per category (scikit-learn's
    multi-label MLP), positives of each category up-weighted by resampling."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    counts = y.sum(0)
    target = max(1, int(np.median(counts[counts > 0])) if (counts > 0).any() else 1)
    extra = [rng.choice(np.flatnonzero(y[:, j]), target - int(counts[j]))
             for j in range(y.shape[1]) if 0 < counts[j] < target]
    idx = np.concatenate([np.arange(len(x)), *extra]) if extra else np.arange(len(x))
    model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=epochs,
                          early_stopping=False, random_state=seed, batch_size=256,
                          learning_rate_init=1e-3)
    model.fit(x[idx], y[idx])
    return HeadSet(tuple(categories), model.coefs_[0].astype(np.float32),
                   model.intercepts_[0].astype(np.float32), model.coefs_[1].astype(np.float32),
                   model.intercepts_[1].astype(np.float32))


def text_logits(heads: HeadSet, windows: Sequence[np.ndarray]) -> np.ndarray:
    """Per text, each category's maximum raw score over its windows."""
    flat = np.concatenate([normalized(w) for w in windows])
    owners = np.repeat(np.arange(len(windows)), [len(w) for w in windows])
    scores = heads.logits(flat)
    out = np.full((len(windows), scores.shape[1]), -np.inf)
    np.maximum.at(out, owners, scores)
    return out


def fit_platt(z: np.ndarray, positive: np.ndarray) -> Calibration:
    """sigmoid(a z + b), class-balanced, with a > 0 (a score is a maximum over windows)."""
    from sklearn.linear_model import LogisticRegression

    if positive.all() or not positive.any():
        return Calibration("platt", 1.0, 0.0)
    model = LogisticRegression(C=100.0, class_weight="balanced", max_iter=1000)
    model.fit(z.reshape(-1, 1), positive.astype(int))
    a = float(model.coef_[0, 0])
    return Calibration("platt", max(a, 1e-3), float(model.intercept_[0]))


def benign_point(z: np.ndarray, benign: np.ndarray, target_fpr: float) -> float:
    """The lowest raw score at which at most ``target_fpr`` of the benign rows score as high."""
    scores = np.sort(np.asarray(z, dtype=np.float64)[benign])[::-1]
    allowed = math.floor(target_fpr * len(scores))  # benign rows that may be flagged
    if allowed >= len(scores):
        return -math.inf
    return float(np.nextafter(scores[allowed], math.inf))


MIN_POINT_GAP = 0.05  # raw-score distance kept between the strike and the refusal point


def align_two_points(lab: LabelSpec, z_strike: float, z_refuse: float, strike_at: float,
                     refuse_at: float) -> LabelSpec:
    """``lab`` with the calibration that scores raw ``z_strike`` exactly ``strike_at`` and raw
    ``z_refuse`` exactly ``refuse_at`` (increasing; the points at least MIN_POINT_GAP apart)."""
    if not 0 < strike_at < refuse_at < 1:
        raise ValueError(f"{lab.category}: need 0 < strike {strike_at} < refuse {refuse_at} < 1")
    gap = max(z_refuse - z_strike, MIN_POINT_GAP)
    a = (_logit(refuse_at) - _logit(strike_at)) / gap
    b = _logit(strike_at) - a * z_strike
    return LabelSpec(lab.index, lab.category, strike_at, Calibration("platt", a, b))


def _logit(p: float) -> float:
    q = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def label_specs(categories: Sequence[str], calibrations: Sequence[Calibration],
                thresholds: Sequence[float], *, offset: int = 0) -> tuple[LabelSpec, ...]:
    return tuple(LabelSpec(offset + j, c, t, cal) for j, (c, cal, t)
                 in enumerate(zip(categories, calibrations, thresholds, strict=True)))


def merge(prompt: HeadSet, completion: HeadSet | None) -> dict[str, np.ndarray]:
    """The ``heads.*`` tensors of both head sets as one graph head: hidden layers side by side,
    a block output matrix (prompt columns first)."""
    sets = [prompt] + ([completion] if completion is not None else [])
    if any(s.hidden_weight is None for s in sets):
        if any(s.hidden_weight is not None for s in sets):
            raise ValueError("head sets must be all linear or all with a hidden layer")
        return {"heads.out.weight": np.concatenate([s.out_weight for s in sets], 1),
                "heads.out.bias": np.concatenate([s.out_bias for s in sets])}
    hidden_w = np.concatenate([s.hidden_weight for s in sets if s.hidden_weight is not None], 1)
    hidden_b = np.concatenate([s.hidden_bias for s in sets if s.hidden_bias is not None])
    rows = [s.out_weight.shape[0] for s in sets]
    cols = [s.out_weight.shape[1] for s in sets]
    out_w = np.zeros((sum(rows), sum(cols)), np.float32)
    r = c = 0
    for s, nr, nc in zip(sets, rows, cols, strict=True):
        out_w[r : r + nr, c : c + nc] = s.out_weight
        r, c = r + nr, c + nc
    return {"heads.hidden.weight": hidden_w.astype(np.float32),
            "heads.hidden.bias": hidden_b.astype(np.float32),
            "heads.out.weight": out_w,
            "heads.out.bias": np.concatenate([s.out_bias for s in sets]).astype(np.float32)}


def expected_calibration_error(probs: np.ndarray, positive: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    total, n = 0.0, len(probs)
    for lo, hi in itertools.pairwise(edges):
        sel = (probs >= lo) & ((probs < hi) if hi < 1 else (probs <= hi))
        if sel.any():
            total += sel.sum() / n * abs(float(probs[sel].mean()) - float(positive[sel].mean()))
    return round(total, 4) if math.isfinite(total) else 1.0
