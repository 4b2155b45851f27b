"""The two towers served as a cascade (encoder/cascade.py) give what the one blended graph gives
on the windows they escalate, and the tuned tower's standardised reading on the others."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.adapters.classifier.encoder.cascade import FILL, GATE, Blend, CascadeRunner
from safeguards.adapters.classifier.encoder.graph import build_cascade, build_graph
from safeguards.adapters.classifier.errors import ModelLoadError

from tiny_bert import CFG, random_bert

LABELS = 3
TUNED_LAYER = "encoder.layer.1.output.dense.bias"  # layer 0 stays shared by both towers


def _heads(rng: np.random.Generator, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}out.weight": rng.normal(0, 0.5, (CFG.hidden_size, LABELS)).astype("f4"),
            f"{prefix}out.bias": rng.normal(0, 0.5, LABELS).astype("f4")}


def _trained(seed: int, gate: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {**_heads(rng, "heads."), **_heads(rng, "semantic.heads."),
            TUNED_LAYER: rng.normal(0, 1, CFG.hidden_size).astype("f4"),
            "blend.tuned": np.array([0.7, 0.5, 1.0], "f4"),
            "blend.semantic": np.array([0.3, 0.6, 0.0], "f4"),  # the last label: tuned only
            "blend.bias": rng.normal(0, 1, LABELS).astype("f4"),
            FILL: rng.normal(0, 1, LABELS).astype("f4"), GATE: np.array([gate], "f4")}


def _runner(trained: dict[str, np.ndarray]) -> CascadeRunner:
    import onnxruntime as ort

    screen, semantic = build_cascade(CFG, random_bert(0), trained, CFG.num_layers)
    blend = Blend.from_trained(trained)
    assert blend is not None
    cpu = ["CPUExecutionProvider"]
    return CascadeRunner(ort.InferenceSession(screen, providers=cpu),
                         ort.InferenceSession(semantic, providers=cpu), blend)


def _batch(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 11)
    lengths = rng.integers(1, 12, rows)
    ids = np.zeros((rows, int(lengths.max())), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, CFG.vocab_size, n)
        mask[i, :n] = 1
    return ids, mask


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), rows=st.integers(1, 6))
def test_escalating_every_window_equals_the_blended_graph(seed: int, rows: int) -> None:
    import onnxruntime as ort

    trained = _trained(seed, -np.inf)
    ids, mask = _batch(seed, rows)
    whole = ort.InferenceSession(build_graph(CFG, random_bert(0), trained,
                                             semantic_layers=CFG.num_layers),
                                 providers=["CPUExecutionProvider"])
    [expected] = whole.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    runner = _runner(trained)
    out = runner.run({"input_ids": ids, "attention_mask": mask}, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert runner.stats.escalated == rows


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), rows=st.integers(2, 6))
def test_windows_below_the_gate_keep_the_stand_in_and_the_rest_are_escalated(
        seed: int, rows: int) -> None:
    ids, mask = _batch(seed, rows)
    everything = _runner(_trained(seed, -np.inf))
    tuned, semantic = everything.towers(ids, mask)
    blend = everything.blend
    screened = blend.screen(tuned)[:, blend.blended].max(axis=1)
    gate = float(np.median(screened))
    runner = _runner(_trained(seed, gate))
    out = runner.run({"input_ids": ids, "attention_mask": mask}, mask)
    escalated = screened >= np.float32(gate)
    np.testing.assert_allclose(out[~escalated], blend.screen(tuned)[~escalated], atol=1e-4)
    np.testing.assert_allclose(out[escalated], blend.combine(tuned, semantic)[escalated],
                               atol=1e-4)
    assert runner.stats.escalated == int(escalated.sum()) < rows
    # the tuned-only label never depends on the semantic tower
    np.testing.assert_allclose(out[:, 2], tuned[:, 2] + blend.bias[2], atol=1e-4)


def test_a_model_without_a_gate_is_no_cascade_and_a_broken_one_is_a_typed_error() -> None:
    trained = _trained(1, 0.0)
    assert Blend.from_trained({k: v for k, v in trained.items() if k != GATE}) is None
    with pytest.raises(ModelLoadError, match=r"cascade\.fill"):
        Blend.from_trained({k: v for k, v in trained.items() if k != FILL})
    with pytest.raises(ModelLoadError, match="do not fit"):
        Blend.from_trained({**trained, FILL: np.zeros(LABELS + 1, "f4")})
    with pytest.raises(ModelLoadError, match="non-finite"):
        Blend.from_trained({**trained, "blend.bias": np.array([0, np.nan, 0], "f4")})
