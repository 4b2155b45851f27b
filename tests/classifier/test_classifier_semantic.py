"""The semantic tower's heads and blend (classifier_training/semantic.py), on small data."""

from __future__ import annotations

import numpy as np
import pytest

from safeguards.adapters.classifier_training import semantic
from safeguards.adapters.classifier_training.corpus.records import Record

CATEGORIES = ("jailbreak", "cyber", "weapons")


def _row(text: str, label: str, source: str = "pkg:src", category: str | None = None,
         kind: str | None = None) -> Record:
    kind = kind or ("general_request" if label == "benign" else label)
    return Record(text, label, category, kind, "en", source, text)


def test_heads_give_each_category_its_log_odds_against_benign() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (len(CATEGORIES) + 1, 8))
    owners = np.repeat(np.arange(40), 2)
    rows = [_row(f"b{i}", "benign") for i in range(10)] + [
        _row(f"h{i}", "jailbreak" if i < 10 else "harmful", category=CATEGORIES[i // 10])
        for i in range(30)]
    klass = [0] * 10 + [1 + i // 10 for i in range(30)]
    emb = centres[np.asarray(klass)[owners]] + rng.normal(0, 0.3, (len(owners), 8))
    weight, bias = semantic.fit_heads(emb, owners, rows, CATEGORIES, seed=1)
    assert weight.shape == (8, len(CATEGORIES)) and bias.shape == (len(CATEGORIES),)
    logits = emb @ weight + bias
    # each row's own category scores highest, and benign rows score below zero everywhere
    for i, k in enumerate(np.asarray(klass)[owners]):
        if k:
            assert logits[i].argmax() == k - 1
        else:
            assert (logits[i] < 0).all()


def test_heads_need_every_category() -> None:
    emb = np.eye(4)
    rows = [_row("a", "benign"), _row("b", "jailbreak"), _row("c", "benign"),
            _row("d", "jailbreak")]
    with pytest.raises(ValueError, match="every prompt category"):
        semantic.fit_heads(emb, np.arange(4), rows, CATEGORIES, seed=1)


def test_blend_standardises_both_towers_on_benign_rows() -> None:
    rng = np.random.default_rng(1)
    tuned = rng.normal(3, 2, (500, 5))  # 3 prompt labels, then 2 completion labels
    sem = rng.normal(-1, 0.5, (500, 3))
    b = semantic.blend(tuned, sem, labels=5)
    blended = tuned[:, :3] * b["blend.tuned"][:3] + sem * b["blend.semantic"][:3] \
        + b["blend.bias"][:3]
    # each tower enters with its weight, in units of its own benign spread, centred on benign
    assert np.allclose(b["blend.tuned"][:3] * tuned[:, :3].std(0), semantic.TUNED_WEIGHT,
                       rtol=1e-4)
    assert np.allclose(b["blend.semantic"][:3] * sem.std(0), 1 - semantic.TUNED_WEIGHT,
                       rtol=1e-4)
    assert np.abs(np.median(blended, 0)).max() < 0.1
    # completion labels keep the tuned logits
    assert list(b["blend.tuned"][3:]) == [1, 1] and list(b["blend.semantic"][3:]) == [0, 0]
    assert list(b["blend.bias"][3:]) == [0, 0]


def test_training_rows_keep_real_harm_and_generated_hard_negatives_only() -> None:
    rows = ([_row(f"benign {i}", "benign") for i in range(5)]
            + [_row("hard", "benign", "generated:benign", kind="hard_negative"),
               _row("made up harm", "harmful", "generated:harmful", category="cyber"),
               _row("real harm", "harmful", category="cyber"),
               _row("an answer", "response_benign", kind="response")])
    kept = {r.text for r in semantic.training_rows(rows, seed=3)}
    assert {"hard", "real harm"} <= kept
    assert "made up harm" not in kept and "an answer" not in kept
    assert sum(t.startswith("benign") for t in kept) == 5


def test_row_max_takes_each_rows_best_window() -> None:
    logits = np.array([[0.0, 1.0], [2.0, -1.0], [5.0, 5.0]])
    out = semantic.row_max(logits, np.array([0, 0, 1]), 2)
    assert out.tolist() == [[2.0, 1.0], [5.0, 5.0]]


def test_tuned_only_columns_keep_the_tuned_logit() -> None:
    rng = np.random.default_rng(2)
    b = semantic.blend(rng.normal(0, 1, (50, 4)), rng.normal(0, 1, (50, 3)), labels=4,
                       tuned_only=[0])
    assert (b["blend.tuned"][0], b["blend.semantic"][0], b["blend.bias"][0]) == (1, 0, 0)
    assert b["blend.semantic"][1] > 0


def test_padded_batches_keep_the_chosen_windows_shortest_first_with_their_masks() -> None:
    wins = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    batches = list(semantic.padded_batches(wins, [0, 1, 3]))
    chunks = [k for chunk, _, _ in batches for k in chunk]
    assert chunks == [1, 0, 3]  # window 2 was not asked for
    for chunk, ids, mask in batches:
        for row, k in enumerate(chunk):
            assert list(ids[row, : len(wins[k])]) == wins[k]
            assert mask[row].sum() == len(wins[k]) and not ids[row, len(wins[k]):].any()


def test_cascade_rows_blend_only_the_windows_at_the_gate() -> None:
    labels = 3
    b = semantic.blend(np.random.default_rng(1).normal(0, 1, (40, labels)),
                       np.random.default_rng(2).normal(0, 1, (40, 2)), labels=labels)
    tuned = np.array([[-3.0, -3.0, 0.0], [3.0, -3.0, 0.0], [-3.0, -3.0, 5.0]])
    sem_logits = np.array([[9.0, 9.0, 0.0], [9.0, 9.0, 0.0], [9.0, 9.0, 0.0]])
    trained = {**b, "cascade.gate": np.array([0.0], np.float32)}
    rows, share = semantic.cascade_rows(trained, tuned, sem_logits, np.array([0, 1, 1]), 2)
    # window 0 is below the gate: the semantic reading (9) does not count; window 1 is above
    screened = tuned * b["blend.tuned"] + b["cascade.fill"] * b["blend.semantic"] \
        + b["blend.bias"]
    blended = tuned * b["blend.tuned"] + sem_logits * b["blend.semantic"] + b["blend.bias"]
    np.testing.assert_allclose(rows[0], screened[0], rtol=1e-5)
    np.testing.assert_allclose(rows[1], np.maximum(blended[1], screened[2]), rtol=1e-5)
    assert share == 1 / 3  # the tuned-only label (2) never escalates a window
