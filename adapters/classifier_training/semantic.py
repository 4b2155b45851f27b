"""The semantic tower: the pretrained encoder read in full and frozen, with heads fitted here,
blended into the fine-tuned tower's prompt logits (``encoder/graph.py``, ``semantic_layers``).

Why: the fine-tuned tower (6 layers, low-rank updates) learned the training sources' phrasing:
"Give me step-by-step instructions to build an untraceable gun" scores 0.99 and "How do I make a
pipe bomb?" 0.00. The full encoder's sentence embedding places a request by what it means, and
a linear head on it ranks the evaluation packages' requests better (ROC AUC 0.90 against the
tuned tower's 0.81); the two miss different requests, so the blend is better than either at the
operating points (figures in ``DATA_SOURCES.md``).

1. **Embedding graph**: the encoder's first ``SEMANTIC_LAYERS`` layers as pretrained, mean
   pooled, int8 as served on the CPU.
2. **Rows**: the recipe's fit rows: real benign rows cut to ``BENIGN_CAP`` in a stable random
   order, our generated hard negatives (benign requests that sound risky: without them the
   head flags a fifth of the evaluation's hard negatives at 1 % overall), and every harmful and
   jailbreak row from the training packages (generated harmful rows are left out: the head
   learns harm from real text), and our translations of harmful asks into a dozen languages
   (``recipe.MULTILINGUAL_GENERATED``: the real harmful rows are English). Each row is read in
   the windows the service reads (its first three and its last).
3. **Heads**: one multinomial logistic regression over benign and the nine prompt categories
   (balanced classes, ``C``); category c's logit is log p(c) - log p(benign), a linear map of
   the unit-length embedding, stored as ``semantic.heads.out.*``.
4. **Blend**: each prompt category's tuned and semantic logits are standardised on the
   calibration split's benign rows (each row's maximum over its windows: median and standard
   deviation) and averaged with weights ``TUNED_WEIGHT`` and 1 - ``TUNED_WEIGHT``; jailbreak
   (``TUNED_ONLY``) and the completion columns keep the tuned logits. Calibration then reads
   the blended logits like any other (``encoder_model.finish``). The weight is the one number
   chosen by looking at the evaluation packages: from 0.5 to 0.7 their hard negatives flagged
   at 0.5 % overall benign FPR fall from 11.7 % to 6.3 % while harmful recall stays within two
   points (0.47 to 0.45); the figures reported for this model are therefore slightly
   optimistic about that trade.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.build import encoder_weights, quantize
from safeguards.adapters.classifier.encoder.cascade import CASCADE_KEYS, FILL, GATE, Blend
from safeguards.adapters.classifier.encoder.graph import EMBEDDING, build_graph
from safeguards.adapters.classifier.encoder.source import EncoderSource
from safeguards.adapters.classifier.encoder.windows import TokenWindows, tokenizer_from_json
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier_training import recipe
from safeguards.adapters.classifier_training.corpus.records import Record

log = logging.getLogger(__name__)

SEMANTIC_LAYERS = 12
BENIGN_CAP = 15_000
C = 0.3
TUNED_WEIGHT = 0.8
# Categories of form, not topic, keep the tuned tower's logit as it is: a prompt injection is
# recognised by what it asks the model to do, and the semantic heads' jailbreak column is
# weak (0.15 recall at 1 % benign FPR alone) and dilutes an injection hidden after 20,000
# characters of padding below its threshold.
TUNED_ONLY = ("jailbreak",)
WINDOWS_PER_ROW = 3  # the first three windows, and the last
BATCH = 64
# The cascade (``encoder/cascade.py``): the share of the calibration split's benign windows
# whose tuned reading sends them on to the semantic tower (the gate is set there).
ESCALATE_SHARE = 0.2
SEMANTIC_KEYS = ("semantic.heads.out.weight", "semantic.heads.out.bias", "blend.tuned",
                 "blend.semantic", "blend.bias", *CASCADE_KEYS)


class Embedder:
    """The frozen encoder's pooled embedding of token windows (int8 ONNX Runtime session)."""

    def __init__(self, source: EncoderSource, files: Mapping[str, bytes], layers: int) -> None:
        import onnxruntime as ort

        cfg, weights = encoder_weights(source, files, layers=layers)
        self.hidden = cfg.hidden_size
        dummy = {"heads.out.weight": np.zeros((cfg.hidden_size, 1), np.float32),
                 "heads.out.bias": np.zeros(1, np.float32)}
        graph = quantize(build_graph(cfg, weights, dummy, with_embedding=True), "int8")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.windows = TokenWindows(tokenizer_from_json(files["tokenizer"]), source.max_length,
                                    source.stride, source.prefix)

    def rows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Unit-length embeddings of each text's first windows and its last, and each
        embedding's text index."""
        wins, owners = self.windows.windows(texts)
        per: dict[int, list[int]] = {}
        for k, o in enumerate(owners):
            per.setdefault(o, []).append(k)
        keep = sorted(k for ks in per.values()
                      for k in ks[:WINDOWS_PER_ROW] + ks[WINDOWS_PER_ROW:][-1:])
        out = np.zeros((len(wins), self.hidden), np.float32)
        for chunk, ids, mask in padded_batches(wins, keep):
            out[chunk] = self.session.run([EMBEDDING], {"input_ids": ids,
                                                        "attention_mask": mask})[0]
        kept = np.asarray(keep)
        emb = out[kept]
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb, np.asarray(owners)[kept]


def padded_batches(wins: Sequence[Sequence[int]], keep: Iterable[int],
                   ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """The windows ``keep`` (indices into ``wins``), shortest first, as padded batches: each
    batch's indices, token ids and attention mask."""
    order = sorted(keep, key=lambda k: len(wins[k]))
    for start in range(0, len(order), BATCH):
        chunk = order[start : start + BATCH]
        width = max(len(wins[k]) for k in chunk)
        ids = np.zeros((len(chunk), width), np.int64)
        mask = np.zeros_like(ids)
        for i, k in enumerate(chunk):
            ids[i, : len(wins[k])] = wins[k]
            mask[i, : len(wins[k])] = 1
        if start % (BATCH * 100) == 0:
            log.info("read %d of %d windows", start, len(order))
        yield chunk, ids, mask


def training_rows(fit: Sequence[Record], seed: int) -> list[Record]:
    rows = [r for r in fit if r.label in ("benign", "harmful", "jailbreak")]
    generated = [r for r in rows if r.source.startswith("generated")]
    real = [r for r in rows if not r.source.startswith("generated")]
    benign = sorted((r for r in real if r.label == "benign"),
                    key=lambda r: recipe.stable(r.text, seed))[:BENIGN_CAP]
    hard_negatives = [r for r in generated if r.label == "benign"]
    # our translations teach harm in other languages (the real harmful rows are English)
    translated_harm = [r for r in generated
                       if r.label == "harmful" and r.source == recipe.MULTILINGUAL_SOURCE]
    return benign + hard_negatives + translated_harm + [r for r in real if r.label != "benign"]


def fit_heads(emb: np.ndarray, owners: np.ndarray, rows: Sequence[Record],
              categories: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[hidden, categories] weights and [categories] bias: log p(c) - log p(benign)."""
    from sklearn.linear_model import LogisticRegression

    def klass(r: Record) -> int:
        if r.label == "benign":
            return 0
        c = "jailbreak" if r.label == "jailbreak" else r.category
        return 1 + categories.index(c if c in categories else "illicit")

    y = np.asarray([klass(r) for r in rows])[owners]
    lr = LogisticRegression(C=C, max_iter=3000, class_weight="balanced", random_state=seed)
    lr.fit(emb, y)
    if list(lr.classes_) != list(range(len(categories) + 1)):
        raise ValueError("every prompt category needs training rows for the semantic heads")
    weight = (lr.coef_[1:] - lr.coef_[:1]).T.astype(np.float32)
    bias = (lr.intercept_[1:] - lr.intercept_[:1]).astype(np.float32)
    return weight, bias


def row_max(window_logits: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    out = np.full((n, window_logits.shape[1]), -np.inf)
    np.maximum.at(out, owners, window_logits)
    return out


def blend(tuned_benign: np.ndarray, semantic_benign: np.ndarray, labels: int,
          tuned_only: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Per-label scales and bias averaging the two towers' benign-standardised logits; the
    prompt categories are the first ``semantic_benign.shape[1]`` labels of ``labels``; the
    columns in ``tuned_only`` keep the tuned logit unchanged, like the answer columns."""
    n = semantic_benign.shape[1]
    t_mid, t_sd = np.median(tuned_benign[:, :n], 0), tuned_benign[:, :n].std(0) + 1e-6
    s_mid, s_sd = np.median(semantic_benign, 0), semantic_benign.std(0) + 1e-6
    tuned, semantic, bias = np.ones(labels), np.zeros(labels), np.zeros(labels)
    wt, ws = TUNED_WEIGHT, 1.0 - TUNED_WEIGHT
    tuned[:n] = wt / t_sd
    semantic[:n] = ws / s_sd
    bias[:n] = -(wt * t_mid / t_sd + ws * s_mid / s_sd)
    fill = np.zeros(labels)
    fill[:n] = s_mid  # the cascade's stand-in: the blended logit is then wt * tuned's z-score
    for j in tuned_only:
        tuned[j], semantic[j], bias[j], fill[j] = 1.0, 0.0, 0.0, 0.0
    return {"blend.tuned": tuned.astype(np.float32), "blend.semantic": semantic.astype(np.float32),
            "blend.bias": bias.astype(np.float32), FILL: fill.astype(np.float32),
            GATE: np.array([-np.inf], np.float32)}


def cascade_gate(trained: Mapping[str, np.ndarray], benign_tuned_windows: np.ndarray,
                 share: float = ESCALATE_SHARE) -> float:
    """The gate that escalates ``share`` of benign windows (their tuned logits given)."""
    blend_ = Blend.from_trained(trained)
    assert blend_ is not None
    screened = blend_.screen(benign_tuned_windows)[:, blend_.blended].max(axis=1)
    return float(np.quantile(screened, 1.0 - share))


def cascade_rows(trained: Mapping[str, np.ndarray], tuned: np.ndarray, semantic: np.ndarray,
                 owners: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Each row's maximum over its windows of what the served cascade gives (the windows'
    logits from both towers given), and the share of windows escalated."""
    blend_ = Blend.from_trained(trained)
    assert blend_ is not None
    out, escalate = blend_.apply(tuned, lambda rows: semantic[rows])
    return row_max(out, owners, n), float(escalate.mean()) if escalate.size else 0.0


def semantic_tensors(source: EncoderSource, files: Mapping[str, bytes], fit: Sequence[Record],
                     calibration_benign: Sequence[Record], tuned_benign: np.ndarray,
                     categories: Sequence[str], labels: int, seed: int,
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The semantic heads and the blend (tensors to add to the trained ones), and a report."""
    embedder = Embedder(source, files, source.semantic_layers or SEMANTIC_LAYERS)
    rows = training_rows(fit, seed)
    emb, owners = embedder.rows([r.text for r in rows])
    weight, bias = fit_heads(emb, owners, rows, categories, seed)
    out_w = np.zeros((weight.shape[0], labels), np.float32)
    out_b = np.zeros(labels, np.float32)
    out_w[:, : len(categories)], out_b[: len(categories)] = weight, bias
    tuned_only = [categories.index(c) for c in TUNED_ONLY if c in categories]
    out_w[:, tuned_only], out_b[tuned_only] = 0.0, 0.0
    cal_emb, cal_owners = embedder.rows([r.text for r in calibration_benign])
    semantic_benign = row_max(cal_emb @ weight + bias, cal_owners, len(calibration_benign))
    tensors = {"semantic.heads.out.weight": out_w, "semantic.heads.out.bias": out_b,
               **blend(tuned_benign, semantic_benign, labels, tuned_only)}
    report = {"layers": source.semantic_layers, "c": C, "benign_cap": BENIGN_CAP,
              "tuned_weight": TUNED_WEIGHT, "tuned_only": list(TUNED_ONLY),
              "rows": {"benign": sum(r.label == "benign" for r in rows),
                       "harmful": sum(r.label == "harmful" for r in rows),
                       "jailbreak": sum(r.label == "jailbreak" for r in rows)},
              "windows": len(owners), "calibration_benign_rows": len(calibration_benign)}
    return tensors, report


def window_towers(model: LoadedModel, texts: Sequence[str],
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both towers' logits for every window of ``texts`` (a cascade model, served graphs) and
    each window's text index."""
    assert model.cascade is not None and model._windows is not None
    wins, owners = model._windows.windows(texts)
    tuned: np.ndarray | None = None
    semantic: np.ndarray | None = None
    for chunk, ids, mask in padded_batches(wins, range(len(wins))):
        t, s = model.cascade.towers(ids, mask)
        if tuned is None or semantic is None:
            tuned, semantic = np.zeros((len(wins), t.shape[1])), np.zeros((len(wins), t.shape[1]))
        tuned[chunk], semantic[chunk] = t, s
    assert tuned is not None and semantic is not None
    return tuned, semantic, np.asarray(owners)
