"""Write a BERT-family encoder and our heads as one ONNX graph: token ids to per-label logits.

The graph is written op by op from the weights (HF ``BertModel`` tensor names, with or without a
``bert.`` prefix), so the conversion needs numpy and ``onnx`` only. Layout::

    input_ids, attention_mask (int64, [batch, seq])
      -> word + position + token-type embeddings -> LayerNorm
      -> N x (self-attention -> add & LayerNorm -> GELU feed-forward -> add & LayerNorm)
      -> masked mean pooling (the sentence embedding the encoder was trained to give)
      -> unit length -> heads: [hidden layer with ReLU] -> linear -> logits ([batch, labels])

Heads are ``heads.hidden.weight`` [features, hidden] / ``heads.hidden.bias`` (optional) and
``heads.out.weight`` [hidden or features, labels] / ``heads.out.bias``. Several heads trained
apart are stored as one hidden layer with a block-structured output matrix. Trained tensors named
like encoder tensors replace them (fine-tuned top layers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from safeguards.adapters.classifier.errors import ModelLoadError

OPSET = 17
LOGITS = "logits"
EMBEDDING = "embedding"
SHARED_HIDDEN = "shared_hidden"
SEMANTIC = "semantic"


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    layer_norm_eps: float = 1e-12
    position_offset: int = 0  # XLM-R style models start positions after the padding index

    @classmethod
    def from_hf(cls, config: Mapping[str, object]) -> EncoderConfig:
        """From a Hugging Face ``config.json`` of a BERT-family model; typed error otherwise."""
        model_type = config.get("model_type")
        if model_type not in ("bert", "xlm-roberta", "roberta"):
            raise ModelLoadError(f"encoder model_type {str(model_type)[:40]!r} is not supported")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ModelLoadError("encoder activation must be gelu")
        try:
            pad = int(config.get("pad_token_id", 0))  # type: ignore[call-overload]
            return cls(
                hidden_size=int(config["hidden_size"]),  # type: ignore[call-overload]
                num_layers=int(config["num_hidden_layers"]),  # type: ignore[call-overload]
                num_heads=int(config["num_attention_heads"]),  # type: ignore[call-overload]
                intermediate_size=int(config["intermediate_size"]),  # type: ignore[call-overload]
                vocab_size=int(config["vocab_size"]),  # type: ignore[call-overload]
                max_positions=int(config["max_position_embeddings"]),  # type: ignore[call-overload]
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),  # type: ignore[arg-type]
                position_offset=pad + 1 if model_type != "bert" else 0,
            )
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError("encoder config.json lacks a required size field") from None


def _strip_prefix(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, arr in weights.items():
        for prefix in ("bert.", "roberta.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = arr
    return out


def merged_weights(encoder: Mapping[str, np.ndarray],
                   trained: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoder's weights with the trained tensors applied: a tensor named like an encoder
    tensor replaces it; a low-rank pair ``X.lora_a`` [r, in] / ``X.lora_b`` [out, r] adds
    ``lora_b @ lora_a`` to ``X.weight`` (fine-tuned layers at a small fraction of the size)."""
    w = _strip_prefix(encoder)
    for name, value in trained.items():
        if name.startswith("heads.") or name.endswith((".lora_a", ".lora_b")):
            continue
        w[name] = value
    for name in trained:
        if not name.endswith(".lora_a"):
            continue
        stem = name[: -len(".lora_a")]
        a, b = trained[name], trained.get(stem + ".lora_b")
        base = w.get(stem + ".weight")
        if b is None or base is None or b.shape[1] != a.shape[0] \
                or (b.shape[0], a.shape[1]) != base.shape:
            raise ModelLoadError(f"low-rank update {stem} does not fit its weight")
        w[stem + ".weight"] = (base + b.astype(np.float32) @ a.astype(np.float32)).astype(
            np.float32)
    return w


class _Builder:
    def __init__(self) -> None:
        import onnx
        from onnx import helper

        self.onnx = onnx
        self.helper = helper
        self.nodes: list[object] = []
        self.inits: list[object] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def output(self, value: str, name: str) -> None:
        self.nodes.append(self.helper.make_node("Identity", [value], [name]))

    def model(self, inputs: list[tuple[str, list[Any], str]],
              outputs: list[tuple[str, list[Any]]]) -> bytes:
        """The serialized model of the nodes so far: inputs (name, shape, "int64" or "float"),
        float outputs (name, shape)."""
        helper, types = self.helper, self.onnx.TensorProto
        graph = helper.make_graph(
            self.nodes, "sg_encoder_heads",
            [helper.make_tensor_value_info(name, types.INT64 if kind == "int64" else types.FLOAT,
                                           shape) for name, shape, kind in inputs],
            [helper.make_tensor_value_info(name, types.FLOAT, shape) for name, shape in outputs],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="safeguards")
        model.ir_version = 8
        return bytes(model.SerializeToString())

    def op(self, kind: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        out = self.name(stem or kind.lower())
        self.nodes.append(self.helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, stem: str) -> str:
        # HF stores nn.Linear weights as [out, in]; MatMul wants [in, out].
        y = self.op("MatMul", [x, self.const(f"{stem}.w", weight.T.astype(np.float32))])
        if bias is None:
            return y
        return self.op("Add", [y, self.const(f"{stem}.b", bias.astype(np.float32))], stem)

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, eps: float,
                   stem: str) -> str:
        return self.op("LayerNormalization",
                       [x, self.const(f"{stem}.g", gamma), self.const(f"{stem}.b", beta)],
                       stem, axis=-1, epsilon=eps)

    def gelu(self, x: str) -> str:
        # exact GELU, 0.5 x (1 + erf(x / sqrt 2)): the pattern ONNX Runtime fuses into one op
        scaled = self.op("Div", [x, self.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])
        erf = self.op("Erf", [scaled])
        one = self.op("Add", [erf, self.const("one", np.array(1.0, np.float32))])
        return self.op("Mul", [self.op("Mul", [x, one]),
                               self.const("half", np.array(0.5, np.float32))])


def _ln(w: Mapping[str, np.ndarray], stem: str) -> tuple[np.ndarray, np.ndarray]:
    gamma = w.get(f"{stem}.weight", w.get(f"{stem}.gamma"))
    beta = w.get(f"{stem}.bias", w.get(f"{stem}.beta"))
    if gamma is None or beta is None:
        raise ModelLoadError(f"encoder weights lack {stem}")
    return gamma, beta


def _need(w: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    arr = w.get(name)
    if arr is None:
        raise ModelLoadError(f"encoder weights lack {name}")
    return arr


def build_graph(cfg: EncoderConfig, encoder: Mapping[str, np.ndarray],
                trained: Mapping[str, np.ndarray], *, with_embedding: bool = False,
                semantic_layers: int | None = None) -> bytes:
    """The serialized ONNX model (fp32). ``with_embedding`` adds the pooled embedding output
    (training reads it to fit the heads). ``semantic_layers`` adds the semantic tower: the same
    windows read through that many layers of the encoder as pretrained (no trained tensor
    applied; the leading layers both towers share are computed once), pooled, with heads of its
    own (``semantic.heads.*``), blended per label into the tuned tower's logits::

        logits = tuned * blend.tuned + semantic * blend.semantic + blend.bias

    (Served, the two towers are split in two graphs, ``build_cascade``: the semantic one runs
    only on the windows the tuned one leaves in doubt.)
    """
    w = merged_weights(encoder, trained)
    b = _Builder()
    ids, mask = "input_ids", "attention_mask"
    t = _Towers(b, cfg, mask, _embeddings(b, cfg, w, ids))
    x = t.run(w, 0, cfg.num_layers)
    pooled, unit = _pool(b, x, t.maskf)
    logits = _heads(b, unit, trained)
    outputs: list[tuple[str, list[Any]]] = [(LOGITS, ["batch", "labels"])]
    if semantic_layers:
        base = _strip_prefix(encoder)
        shared = shared_layers(cfg, w, base, semantic_layers)
        y = t.run(base, shared, semantic_layers, t.after[shared] if shared else None)
        semantic = _heads(b, _pool(b, y, t.maskf)[1], trained, "semantic.heads.")
        logits = b.op("Add", [
            b.op("Add", [b.op("Mul", [logits, b.const("blend_t", _need(trained, "blend.tuned"))]),
                         b.op("Mul", [semantic,
                                      b.const("blend_s", _need(trained, "blend.semantic"))])]),
            b.const("blend_b", _need(trained, "blend.bias"))], "blended")
    b.output(logits, LOGITS)
    if with_embedding:
        b.output(pooled, EMBEDDING)
        outputs.append((EMBEDDING, ["batch", cfg.hidden_size]))
    return b.model([(ids, ["batch", "seq"], "int64"), (mask, ["batch", "seq"], "int64")],
                   outputs)


def shared_layers(cfg: EncoderConfig, merged: Mapping[str, np.ndarray],
                  base: Mapping[str, np.ndarray], semantic_layers: int) -> int:
    """How many leading layers the tuned tower leaves as pretrained (both towers share them)."""
    shared = 0
    while shared < min(cfg.num_layers, semantic_layers) and all(
            np.array_equal(merged[k], base[k]) for k in base
            if k.startswith(f"encoder.layer.{shared}.")):
        shared += 1
    return shared


def build_cascade(cfg: EncoderConfig, encoder: Mapping[str, np.ndarray],
                  trained: Mapping[str, np.ndarray], semantic_layers: int) -> tuple[bytes, bytes]:
    """The two towers as two graphs (fp32), so the second runs only where it is needed.

    The screening graph: token ids and mask to the tuned tower's logits (``logits``) and the
    hidden states after the layers both towers share (``shared_hidden``). The semantic graph:
    those hidden states and the mask to the semantic heads' logits (``semantic``). Blending
    (``cascade.Cascade``) happens outside, per window."""
    w = merged_weights(encoder, trained)
    base = _strip_prefix(encoder)
    shared = shared_layers(cfg, w, base, semantic_layers)
    b = _Builder()
    ids, mask = "input_ids", "attention_mask"
    t = _Towers(b, cfg, mask, _embeddings(b, cfg, w, ids))
    b.output(_heads(b, _pool(b, t.run(w, 0, cfg.num_layers), t.maskf)[1], trained), LOGITS)
    b.output(t.after[shared] if shared else t.x0, SHARED_HIDDEN)
    screen = b.model([(ids, ["batch", "seq"], "int64"), (mask, ["batch", "seq"], "int64")],
                     [(LOGITS, ["batch", "labels"]),
                      (SHARED_HIDDEN, ["batch", "seq", cfg.hidden_size])])
    b = _Builder()
    t = _Towers(b, cfg, mask, SHARED_HIDDEN)
    y = t.run(base, shared, semantic_layers)
    b.output(_heads(b, _pool(b, y, t.maskf)[1], trained, "semantic.heads."), SEMANTIC)
    semantic = b.model([(SHARED_HIDDEN, ["batch", "seq", cfg.hidden_size], "float"),
                        (mask, ["batch", "seq"], "int64")], [(SEMANTIC, ["batch", "labels"])])
    return screen, semantic


def _embeddings(b: _Builder, cfg: EncoderConfig, w: Mapping[str, np.ndarray], ids: str) -> str:
    word = b.op("Gather", [b.const("word_emb", _need(w, "embeddings.word_embeddings.weight")),
                           ids], "word")
    seq = b.op("Shape", [ids], "seq", start=1, end=2)  # 1-D: [seq]
    offset = np.array([cfg.position_offset], np.int64)
    pos = b.op("Slice", [b.const("pos_emb", _need(w, "embeddings.position_embeddings.weight")),
                         b.const("pos0", offset), b.op("Add", [seq, b.const("pos_off", offset)]),
                         b.const("ax0", np.array([0], np.int64))], "pos")
    token_type = w.get("embeddings.token_type_embeddings.weight")
    x = b.op("Add", [word, pos])
    if token_type is not None:
        x = b.op("Add", [x, b.const("type_emb", token_type[0])])
    return b.layer_norm(x, *_ln(w, "embeddings.LayerNorm"), cfg.layer_norm_eps, "emb_ln")


class _Towers:
    """Transformer layers over one embedded input; remembers each layer's output so a second
    tower can start from the layers it shares with the first."""

    def __init__(self, b: _Builder, cfg: EncoderConfig, mask: str, x: str) -> None:
        self.b, self.cfg = b, cfg
        self.after: dict[int, str] = {}  # layers run -> output
        self.x0 = x
        # attention bias: 0 where attended, -10000 where padded; [batch, 1, 1, seq]
        self.maskf = b.op("Cast", [mask], "maskf", to=b.onnx.TensorProto.FLOAT)
        bias = b.op("Mul", [b.op("Sub", [b.const("one_f", np.array(1.0, np.float32)),
                                         self.maskf]),
                            b.const("neg", np.array(-10000.0, np.float32))])
        self.bias = b.op("Unsqueeze", [bias, b.const("ax12", np.array([1, 2], np.int64))],
                         "attn_bias")
        heads, hidden = cfg.num_heads, cfg.hidden_size
        self.head_dim = hidden // heads
        self.split_shape = b.const("split", np.array([0, 0, heads, self.head_dim], np.int64))
        self.merge_shape = b.const("merge", np.array([0, 0, hidden], np.int64))
        self.scale = b.const("scale", np.array(1.0 / math.sqrt(self.head_dim), np.float32))

    def run(self, w: Mapping[str, np.ndarray], start: int, stop: int,
            x: str | None = None) -> str:
        x = x or self.x0
        for i in range(start, stop):
            x = self._layer(w, i, x)
            self.after.setdefault(i + 1, x)
        return x

    def _layer(self, w: Mapping[str, np.ndarray], i: int, x: str) -> str:
        b, p, eps = self.b, f"encoder.layer.{i}.", self.cfg.layer_norm_eps

        def proj(kind: str, perm: list[int]) -> str:
            y = b.linear(x, _need(w, f"{p}attention.self.{kind}.weight"),
                         _need(w, f"{p}attention.self.{kind}.bias"), f"l{i}.{kind}")
            return b.op("Transpose", [b.op("Reshape", [y, self.split_shape])], perm=perm)

        q = proj("query", [0, 2, 1, 3])
        k = proj("key", [0, 2, 3, 1])
        v = proj("value", [0, 2, 1, 3])
        scores = b.op("Add", [b.op("Mul", [b.op("MatMul", [q, k]), self.scale]), self.bias])
        probs = b.op("Softmax", [scores], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, self.merge_shape])
        attn = b.linear(ctx, _need(w, f"{p}attention.output.dense.weight"),
                        _need(w, f"{p}attention.output.dense.bias"), f"l{i}.attn_out")
        x = b.layer_norm(b.op("Add", [attn, x]), *_ln(w, f"{p}attention.output.LayerNorm"),
                         eps, f"l{i}.ln1")
        inter = b.gelu(b.linear(x, _need(w, f"{p}intermediate.dense.weight"),
                                _need(w, f"{p}intermediate.dense.bias"), f"l{i}.ffn_in"))
        out = b.linear(inter, _need(w, f"{p}output.dense.weight"),
                       _need(w, f"{p}output.dense.bias"), f"l{i}.ffn_out")
        return b.layer_norm(b.op("Add", [out, x]), *_ln(w, f"{p}output.LayerNorm"), eps,
                            f"l{i}.ln2")


def _pool(b: _Builder, x: str, maskf: str) -> tuple[str, str]:
    """Masked mean pooling, and that at unit length (what the heads were fitted on)."""
    m3 = b.op("Unsqueeze", [maskf, b.const("ax2", np.array([2], np.int64))])
    summed = b.op("ReduceSum", [b.op("Mul", [x, m3]), b.const("ax1", np.array([1], np.int64))],
                  keepdims=0)
    count = b.op("ReduceSum", [m3, b.const("ax1b", np.array([1], np.int64))], keepdims=0)
    count = b.op("Max", [count, b.const("eps", np.array(1e-9, np.float32))])
    pooled = b.op("Div", [summed, count], "pooled")
    norm = b.op("ReduceL2", [pooled], axes=[-1], keepdims=1)  # opset 17: axes is an attribute
    tiny = b.const("tiny", np.array(1e-12, np.float32))
    return pooled, b.op("Div", [pooled, b.op("Max", [norm, tiny])], "unit")


def _heads(b: _Builder, features: str, trained: Mapping[str, np.ndarray],
           prefix: str = "heads.") -> str:
    out_w = trained.get(f"{prefix}out.weight")
    out_b = trained.get(f"{prefix}out.bias")
    if out_w is None or out_b is None:
        raise ModelLoadError(f"trained weights lack {prefix}out.weight / {prefix}out.bias")
    x = features
    hidden_w = trained.get(f"{prefix}hidden.weight")
    if hidden_w is not None:
        hidden_b = trained.get(f"{prefix}hidden.bias")
        if hidden_b is None:
            raise ModelLoadError(f"trained weights lack {prefix}hidden.bias")
        x = b.op("MatMul", [x, b.const("head_h.w", hidden_w.astype(np.float32))], "head_mm")
        x = b.op("Relu", [b.op("Add", [x, b.const("head_h.b", hidden_b.astype(np.float32))])])
    x = b.op("MatMul", [x, b.const("head_o.w", out_w.astype(np.float32))], "head_mm")
    return b.op("Add", [x, b.const("head_o.b", out_b.astype(np.float32))], "head_logits")
