"""Fine-tuning exports exactly what it trained: the served graph equals the PyTorch model.

Needs PyTorch (the ``train`` extra); skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from safeguards.adapters.classifier.encoder.graph import build_graph, merged_weights

from tiny_bert import CFG, random_bert

torch = pytest.importorskip("torch")


def test_trained_low_rank_updates_and_heads_survive_export() -> None:
    import onnxruntime as ort

    from safeguards.adapters.classifier_training import finetune as ft

    weights = {k.removeprefix("bert."): v for k, v in random_bert(5).items()}
    rng = np.random.default_rng(0)
    windows = []
    for i in range(24):
        ids = [1, *rng.integers(4, CFG.vocab_size, int(rng.integers(3, 12))).tolist(), 2]
        target = np.zeros(3, np.int8)
        target[i % 3] = 1
        windows.append(ft.Window(ids, target, np.ones(3, np.int8)))
    config = ft.FinetuneConfig(trainable_from=1, rank=4, head_hidden=8, epochs=2, batch=8,
                               lr=1e-2, pair_batch=2)
    trained = ft.train(CFG, weights, windows, (2, 1), config,
                       pairs=[([1, 5, 6, 2], [1, 7, 8, 9, 2])])
    assert any(k.endswith(".lora_a") for k in trained)
    assert trained["heads.out.weight"].shape == (16, 3)  # two hidden layers of 8, side by side
    # the PyTorch encoder with the updates merged, the heads by hand, vs the ONNX graph
    merged = merged_weights(weights, trained)
    encoder = ft.Encoder(CFG, merged, ft.FinetuneConfig(trainable_from=CFG.num_layers))
    session = ort.InferenceSession(build_graph(CFG, weights, trained),
                                   providers=["CPUExecutionProvider"])
    for w in windows[:5]:
        ids = torch.tensor([w.ids])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            unit = encoder.top(encoder.bottom(ids, mask), mask).numpy()
        hidden = np.maximum(0, unit @ trained["heads.hidden.weight"] + trained["heads.hidden.bias"])
        expected = hidden @ trained["heads.out.weight"] + trained["heads.out.bias"]
        got = session.run(["logits"], {"input_ids": ids.numpy(),
                                       "attention_mask": mask.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
