"""The encoder graph written op by op equals a plain numpy BERT, padding and windows included."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.adapters.classifier.encoder.graph import EncoderConfig, build_graph
from safeguards.adapters.classifier.encoder.tensors import read_tensors, write_tensors
from safeguards.adapters.classifier.errors import ModelLoadError

from tiny_bert import CFG, random_bert


def _heads(seed: int, hidden: int = 8, labels: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {"heads.hidden.weight": rng.normal(0, 0.5, (CFG.hidden_size, hidden)).astype("f4"),
            "heads.hidden.bias": rng.normal(0, 0.5, hidden).astype("f4"),
            "heads.out.weight": rng.normal(0, 0.5, (hidden, labels)).astype("f4"),
            "heads.out.bias": rng.normal(0, 0.5, labels).astype("f4")}


def _reference(w: dict[str, np.ndarray], heads: dict[str, np.ndarray],
               ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in w.items()}
    erf = np.vectorize(math.erf)

    def ln(x: np.ndarray, stem: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        out: np.ndarray = ((x - mu) / np.sqrt(var + CFG.layer_norm_eps) * w[stem + ".weight"]
                           + w[stem + ".bias"])
        return out

    n, h, heads_n = len(ids), CFG.hidden_size, CFG.num_heads
    d = h // heads_n
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "embeddings.LayerNorm")
    for layer in range(CFG.num_layers):
        p = f"encoder.layer.{layer}."

        def lin(name: str, inp: np.ndarray, p: str = p) -> np.ndarray:
            out: np.ndarray = inp @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        q, k, v = (lin(f"attention.self.{s}", x).reshape(n, heads_n, d).transpose(1, 0, 2)
                   for s in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        x = ln(lin("attention.output.dense", ctx) + x, p + "attention.output.LayerNorm")
        inter = lin("intermediate.dense", x)
        inter = 0.5 * inter * (1 + erf(inter / math.sqrt(2)))
        x = ln(lin("output.dense", inter) + x, p + "output.LayerNorm")
    pooled = x.mean(0)
    unit = pooled / np.linalg.norm(pooled)
    hid = np.maximum(0, unit @ heads["heads.hidden.weight"] + heads["heads.hidden.bias"])
    return pooled, hid @ heads["heads.out.weight"] + heads["heads.out.bias"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000),
       lengths=st.lists(st.integers(1, 30), min_size=1, max_size=4))
def test_graph_matches_numpy_bert_with_padding(seed: int, lengths: list[int]) -> None:
    import onnxruntime as ort

    w, heads = random_bert(seed), _heads(seed)
    graph = build_graph(CFG, w, heads, with_embedding=True)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, CFG.vocab_size, n).tolist() for n in lengths]
    width = max(lengths)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    logits, pooled = session.run(["logits", "embedding"],
                                 {"input_ids": ids, "attention_mask": mask})
    for i, row in enumerate(rows):
        ref_pooled, ref_logits = _reference(w, heads, row)
        np.testing.assert_allclose(pooled[i], ref_pooled, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[i], ref_logits, rtol=1e-4, atol=1e-4)


def test_trained_tensors_replace_encoder_tensors() -> None:
    import onnxruntime as ort

    w, heads = random_bert(3), _heads(3)
    name = "encoder.layer.1.output.dense.bias"
    tuned = {**heads, name: np.full(CFG.hidden_size, 2.0, np.float32)}
    ids = np.array([[5, 6, 7]], np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    base = ort.InferenceSession(build_graph(CFG, w, heads), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(build_graph(CFG, w, tuned), providers=["CPUExecutionProvider"])
    assert not np.allclose(base.run(["logits"], feed)[0], new.run(["logits"], feed)[0])


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), length=st.integers(1, 30))
def test_semantic_tower_blends_the_pretrained_reading_into_the_tuned_one(seed: int,
                                                                         length: int) -> None:
    """Layer 1 fine-tuned, layer 0 shared: the blended logits are the tuned model's and the
    pretrained encoder's (with the semantic heads) combined per label by the blend tensors."""
    import onnxruntime as ort

    w, heads = random_bert(seed), _heads(seed)
    name = "encoder.layer.1.output.dense.bias"
    rng = np.random.default_rng(seed + 7)
    semantic = {k.replace("heads.", "semantic.heads."): v for k, v in _heads(seed + 3).items()}
    blend = {"blend.tuned": rng.uniform(0, 1, 3).astype("f4"),
             "blend.semantic": rng.uniform(0, 1, 3).astype("f4"),
             "blend.bias": rng.normal(0, 1, 3).astype("f4")}
    trained = {**heads, name: rng.normal(0, 1, CFG.hidden_size).astype("f4"), **semantic, **blend}
    graph = build_graph(CFG, w, trained, semantic_layers=CFG.num_layers)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    ids = rng.integers(1, CFG.vocab_size, length).tolist()
    [logits] = session.run(["logits"], {"input_ids": np.array([ids], np.int64),
                                        "attention_mask": np.ones((1, length), np.int64)})
    tuned_w = {**w, "bert." + name: trained[name]}
    _, tuned = _reference(tuned_w, heads, ids)
    _, pretrained = _reference(w, {k.replace("semantic.heads.", "heads."): v
                                   for k, v in semantic.items()}, ids)
    expected = tuned * blend["blend.tuned"] + pretrained * blend["blend.semantic"] \
        + blend["blend.bias"]
    np.testing.assert_allclose(logits[0], expected, rtol=1e-4, atol=1e-4)


def test_a_semantic_tower_without_its_tensors_is_a_typed_error() -> None:
    with pytest.raises(ModelLoadError, match=r"semantic\.heads"):
        build_graph(CFG, random_bert(1), _heads(1), semantic_layers=CFG.num_layers)


def test_missing_tensors_and_configs_are_typed_errors() -> None:
    w = random_bert(1)
    del w["bert.encoder.layer.0.intermediate.dense.weight"]
    with pytest.raises(ModelLoadError, match=r"intermediate\.dense\.weight"):
        build_graph(CFG, w, _heads(1))
    with pytest.raises(ModelLoadError, match=r"heads\.out"):
        build_graph(CFG, random_bert(1), {})
    with pytest.raises(ModelLoadError, match="model_type"):
        EncoderConfig.from_hf({"model_type": "gpt2"})
    with pytest.raises(ModelLoadError, match="size field"):
        EncoderConfig.from_hf({"model_type": "bert"})


def test_safetensors_round_trip_and_damage(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray] = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.array([1, 2, 3], np.int64), "c": np.ones((0, 4), np.float32)}
    path = tmp_path / "t.safetensors"
    write_tensors(path, tensors, {"source": "test"})
    back = read_tensors(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
    write_tensors(tmp_path / "again.safetensors", dict(reversed(list(tensors.items()))),
                  {"source": "test"})
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    data = path.read_bytes()
    for bad in (data[:5], b"\xff" * 8 + data[8:], data[:-4]):
        path.write_bytes(bad)
        with pytest.raises(ModelLoadError):
            read_tensors(path)
