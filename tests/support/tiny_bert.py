"""A tiny random BERT (the tensor names of Hugging Face ``BertModel``) for encoder tests."""

from __future__ import annotations

import numpy as np

from safeguards.adapters.classifier.encoder.graph import EncoderConfig

CFG = EncoderConfig(hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32,
                    vocab_size=50, max_positions=40)


def random_bert(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, i = CFG.hidden_size, CFG.intermediate_size

    def r(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.3, shape).astype(np.float32)

    w = {"bert.embeddings.word_embeddings.weight": r(CFG.vocab_size, h),
         "bert.embeddings.position_embeddings.weight": r(CFG.max_positions, h),
         "bert.embeddings.token_type_embeddings.weight": r(2, h),
         "bert.embeddings.LayerNorm.weight": 1 + r(h), "bert.embeddings.LayerNorm.bias": r(h)}
    for n in range(CFG.num_layers):
        p = f"bert.encoder.layer.{n}."
        for name in ("query", "key", "value"):
            w[f"{p}attention.self.{name}.weight"] = r(h, h)
            w[f"{p}attention.self.{name}.bias"] = r(h)
        w[f"{p}attention.output.dense.weight"] = r(h, h)
        w[f"{p}attention.output.dense.bias"] = r(h)
        w[f"{p}attention.output.LayerNorm.weight"] = 1 + r(h)
        w[f"{p}attention.output.LayerNorm.bias"] = r(h)
        w[f"{p}intermediate.dense.weight"] = r(i, h)
        w[f"{p}intermediate.dense.bias"] = r(i)
        w[f"{p}output.dense.weight"] = r(h, i)
        w[f"{p}output.dense.bias"] = r(h)
        w[f"{p}output.LayerNorm.weight"] = 1 + r(h)
        w[f"{p}output.LayerNorm.bias"] = r(h)
    return w
