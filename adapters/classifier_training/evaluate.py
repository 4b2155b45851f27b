"""Per-category precision, recall, ROC AUC and calibration of a loaded model on labelled text.

Runs on the runtime dependencies only (numpy and ONNX Runtime), so ``safeguards classifier eval``
works on a serving machine. Texts are windowed exactly as the adapter windows them: a category's
score is its maximum over the text's windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.errors import TextRejected
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.text import prepare_text
from safeguards.adapters.classifier_training.sources import Example
from safeguards.core.errors import InvalidInput

CALIBRATION_BINS = 10
# labels that say "harmful" without a category: positives of the any-category figures only
ANY_HARM = "*"
GENERIC_HARM_LABELS = frozenset({"harmful", "unsafe", "harm", "toxic", "malicious", "attack",
                                 "positive", "1", "true"})


def score_texts(model: LoadedModel, texts: Sequence[str], *, batch: int = 256) -> np.ndarray:
    """Calibrated scores (n, labels); a rejected text (empty, binary) scores all zeros."""
    m = model.manifest
    flat: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        try:
            prepared = prepare_text(text, max_chars=m.max_chars, max_windows=m.max_windows,
                                    fine_chars=m.fine_chars, normalizer=m.window_normalizer)
        except TextRejected:
            continue
        flat += prepared.windows
        owner += [i] * len(prepared.windows)
    out = np.zeros((len(texts), len(m.labels)))
    for start in range(0, len(flat), batch):
        probs = model.predict(flat[start : start + batch])
        for k, row in enumerate(probs):
            i = owner[start + k]
            out[i] = np.maximum(out[i], row)
    return out


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Mann-Whitney AUC with ties averaged; None when only one class is present."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def calibration(y: np.ndarray, s: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error and the reliability table (equal-width bins)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    ece = 0.0
    for k in range(bins):
        lo, hi = edges[k], edges[k + 1]
        sel = (s >= lo) & ((s < hi) if k < bins - 1 else (s <= hi))
        n = int(sel.sum())
        if n == 0:
            continue
        mean_s, frac = float(s[sel].mean()), float(y[sel].mean())
        ece += n / len(s) * abs(mean_s - frac)
        table.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": n, "mean_score": round(mean_s, 4),
                      "positive_rate": round(frac, 4)})
    return {"ece": round(ece, 4), "bins": table}


def report(model: LoadedModel, texts: Sequence[str],
           labels: Sequence[frozenset[str]]) -> dict[str, Any]:
    scores = score_texts(model, texts)
    out: dict[str, Any] = {"n": len(texts), "categories": {}}
    for j, lab in enumerate(model.manifest.labels):
        y = np.array([1 if lab.category in ls else 0 for ls in labels])
        s = scores[:, j]
        flagged = s >= lab.threshold
        tp = int((flagged & (y == 1)).sum())
        fp = int((flagged & (y == 0)).sum())
        pos = int(y.sum())
        auc = roc_auc(y, s)
        out["categories"][lab.category] = {
            "positives": pos,
            "threshold": lab.threshold,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / pos, 4) if pos else None,
            "roc_auc": None if auc is None else round(auc, 4),
            "calibration": calibration(y, s),
        }
    # reliability over every (text, category) pair: does a score of 0.8 mean 80 %?
    y_all = np.array([[1 if lab.category in ls else 0 for lab in model.manifest.labels]
                      for ls in labels]).reshape(-1)
    out["calibration_all_categories"] = calibration(y_all, scores.reshape(-1))
    benign = np.array([not ls for ls in labels])
    thresholds = np.array([lab.threshold for lab in model.manifest.labels])
    any_flag = np.asarray((scores >= thresholds).any(axis=1))
    if benign.any():
        out["benign_false_positive_rate"] = round(float(any_flag[benign].mean()), 4)
    # harmful (any category, or labelled only "harmful") vs benign: is it flagged at all?
    q = np.clip(scores, 1e-7, 1 - 1e-7)
    t = np.clip(thresholds, 1e-7, 1 - 1e-7)
    margin = (np.log(q / (1 - q)) - np.log(t / (1 - t))).max(axis=1)
    harmful = ~benign
    auc = roc_auc(harmful.astype(int), margin)
    out["any_category"] = {
        "harmful": int(harmful.sum()), "benign": int(benign.sum()),
        "recall": round(float(any_flag[harmful].mean()), 4) if harmful.any() else None,
        "benign_false_positive_rate": round(float(any_flag[benign].mean()), 4)
        if benign.any() else None,
        "roc_auc": None if auc is None else round(auc, 4),
    }
    return out


def evaluate_examples(model: LoadedModel, examples: Sequence[Example]) -> dict[str, Any]:
    return report(model, [e.text for e in examples], [e.labels for e in examples])


def evasive_summary(model: LoadedModel, examples: Sequence[Example]) -> dict[str, Any]:
    """Held-out evasive requests and their negatives: per category precision, recall and ROC AUC
    (categories with positives), the share of harmful requests flagged in at least one of their
    own categories, and the share of the negatives flagged in any category."""
    scores = score_texts(model, [e.text for e in examples])
    labs = model.manifest.labels
    thresholds = np.array([lab.threshold for lab in labs])
    flagged = scores >= thresholds
    own = np.array([[lab.category in e.labels for lab in labs] for e in examples])
    harmful = own.any(axis=1)
    cats: dict[str, Any] = {}
    for j, lab in enumerate(labs):
        y = own[:, j]
        if not y.any():
            continue
        tp = int((flagged[:, j] & y).sum())
        fp = int((flagged[:, j] & ~y).sum())
        auc = roc_auc(y.astype(int), scores[:, j])
        cats[lab.category] = {
            "positives": int(y.sum()),
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / int(y.sum()), 4),
            "roc_auc": None if auc is None else round(auc, 4)}
    caught: np.ndarray = np.asarray((flagged & own).any(axis=1))
    any_flag: np.ndarray = np.asarray(flagged.any(axis=1))
    return {
        "n_harmful": int(harmful.sum()), "n_benign": int((~harmful).sum()),
        "categories": cats,
        "own_category_any_recall": round(float(caught[harmful].mean()), 4)
        if harmful.any() else None,
        "benign_false_positive_rate": round(float(any_flag[~harmful].mean()), 4)
        if (~harmful).any() else None,
    }


def false_positive_rate(model: LoadedModel, benign_texts: Sequence[str]) -> dict[str, Any]:
    """Share of benign texts on which any category reaches its threshold."""
    scores = score_texts(model, benign_texts)
    thresholds = np.array([lab.threshold for lab in model.manifest.labels])
    flagged = (scores >= thresholds).any(axis=1)
    per_cat = {lab.category: int((scores[:, j] >= lab.threshold).sum())
               for j, lab in enumerate(model.manifest.labels)}
    lengths = [len(t) for t in benign_texts]
    return {"n": len(benign_texts), "fpr": round(float(flagged.mean()), 4),
            "flagged_by_category": per_cat,
            "mean_chars": int(np.mean(lengths)) if lengths else 0}


def read_jsonl(path: Path, categories: Iterable[str]) -> tuple[list[str], list[frozenset[str]]]:
    """Rows ``{"text": str, "labels": [category, ...]}`` (empty list: benign).

    ``"label"``/``"category"`` (one category, or "benign"/"safe"/null) is accepted too, and a
    label that says only "harmful" ("unsafe", "toxic", ...) counts toward the any-category
    figures. A bad row raises :class:`InvalidInput` naming its line number, never its text.
    """
    known = frozenset(categories)
    texts: list[str] = []
    labels: list[frozenset[str]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InvalidInput(f"{path.name}:{lineno}: not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InvalidInput(f"{path.name}:{lineno}: needs a string field 'text'")
            if "labels" in row:
                raw = row["labels"]
                if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                    raise InvalidInput(f"{path.name}:{lineno}: 'labels' must be a list of str")
                cats = frozenset(raw)
            else:
                one = row.get("label", row.get("category"))
                cats = frozenset() if one in (None, "benign", "safe", "", 0, False) \
                    else frozenset({str(one)})
            cats = frozenset(ANY_HARM if c.lower() in GENERIC_HARM_LABELS else c for c in cats)
            unknown = cats - known - {ANY_HARM}
            if unknown:
                raise InvalidInput(
                    f"{path.name}:{lineno}: unknown categories {sorted(unknown)[:3]}")
            texts.append(row["text"])
            labels.append(cats)
    return texts, labels
