"""Fine-tuning exports exactly what it trained: the served graph equals the PyTorch model.

Needs PyTorch (the ``train`` extra); skipped without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from safeguards.adapters.classifier.encoder.graph import build_graph, merged_weights

from tiny_bert import CFG, random_bert

torch = pytest.importorskip("torch")


def _windows(n: int, *, seed: int) -> list[Any]:
    """``n`` random token windows, each the positive of one of three labels in turn."""
    from safeguards.adapters.classifier_training import finetune as ft

    rng = np.random.default_rng(seed)
    windows = []
    for i in range(n):
        ids = [1, *rng.integers(4, CFG.vocab_size, int(rng.integers(3, 12))).tolist(), 2]
        target = np.zeros(3, np.int8)
        target[i % 3] = 1
        windows.append(ft.Window(ids, target, np.ones(3, np.int8)))
    return windows


def test_trained_low_rank_updates_and_heads_survive_export() -> None:
    import onnxruntime as ort

    from safeguards.adapters.classifier_training import finetune as ft

    weights = {k.removeprefix("bert."): v for k, v in random_bert(5).items()}
    windows = _windows(24, seed=0)
    config = ft.FinetuneConfig(trainable_from=1, rank=4, head_hidden=8, epochs=2, batch=8,
                               lr=1e-2, pair_batch=2)
    trained = ft.train(CFG, weights, windows, (2, 1), config,
                       pairs=[([1, 5, 6, 2], [1, 7, 8, 9, 2])], held_out=_windows(12, seed=9))
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


def test_retraining_heads_keeps_the_tuned_encoder_and_learns_new_labels() -> None:
    from safeguards.adapters.classifier_training import finetune as ft
    from safeguards.adapters.classifier_training.retrain_heads import train_heads

    weights = {k.removeprefix("bert."): v for k, v in random_bert(5).items()}
    windows = _windows(32, seed=1)
    config = ft.FinetuneConfig(trainable_from=1, rank=4, head_hidden=8, epochs=1, batch=8,
                               lr=1e-2)
    tuned = ft.train(CFG, weights, windows, (2, 1), config)
    # new labels: the first column now says whether a window is made mostly of token 7
    relabelled = []
    for i, w in enumerate(windows):
        ids = [1, *([7] * 8), *w.ids[1:4], 2] if i % 2 else w.ids
        relabelled.append(ft.Window(ids, np.array([i % 2, 0, 0], np.int8), w.task))
    again = train_heads(CFG, weights, tuned, relabelled, (2, 1), config, epochs=300, lr=3e-2)
    for key, value in tuned.items():
        if key.endswith((".lora_a", ".lora_b")):
            np.testing.assert_allclose(again[key], value, rtol=1e-6, atol=1e-7)
    assert not np.allclose(again["heads.out.weight"], tuned["heads.out.weight"])
    # the retrained heads read the kept encoder and separate the new labels
    encoder = ft.Encoder(CFG, merged_weights(weights, again),
                         ft.FinetuneConfig(trainable_from=CFG.num_layers))
    logits = []
    for w in relabelled:
        ids = torch.tensor([w.ids])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            unit = encoder.top(encoder.bottom(ids, mask), mask).numpy()
        hidden = np.maximum(0, unit @ again["heads.hidden.weight"] + again["heads.hidden.bias"])
        logits.append(float((hidden @ again["heads.out.weight"] + again["heads.out.bias"])[0, 0]))
    positive = [s for s, w in zip(logits, relabelled, strict=True) if w.target[0]]
    negative = [s for s, w in zip(logits, relabelled, strict=True) if not w.target[0]]
    assert min(positive) > max(negative)


def test_warm_heads_start_from_the_tuned_runs_and_embeddings_are_kept(
        tmp_path: Any, monkeypatch: Any) -> None:
    from safeguards.adapters.classifier_training import finetune as ft
    from safeguards.adapters.classifier_training import retrain_heads as rh

    weights = {k.removeprefix("bert."): v for k, v in random_bert(5).items()}
    windows = _windows(16, seed=2)
    config = ft.FinetuneConfig(trainable_from=1, rank=4, head_hidden=8, epochs=1, batch=8,
                               lr=1e-2)
    tuned = ft.train(CFG, weights, windows, (2, 1), config)
    # no steps from a warm start: the tuned run's heads, read back exactly
    same = rh.train_heads(CFG, weights, tuned, windows, (2, 1), config, epochs=0, warm=True,
                          cache=tmp_path)
    for key in ("heads.hidden.weight", "heads.hidden.bias", "heads.out.weight",
                "heads.out.bias"):
        np.testing.assert_array_equal(same[key], tuned[key])
    assert len(list(tmp_path.glob("heads-embeddings-*.npy"))) == 1

    def not_again(*_: Any) -> Any:
        raise AssertionError("the kept embeddings were computed again")

    monkeypatch.setattr(rh, "pooled_embeddings", not_again)
    again = rh.train_heads(CFG, weights, tuned, windows, (2, 1), config, epochs=0, warm=True,
                           cache=tmp_path)
    np.testing.assert_array_equal(again["heads.out.weight"], tuned["heads.out.weight"])
    # other windows are another key: computed, not read
    with pytest.raises(AssertionError, match="computed again"):
        rh.train_heads(CFG, weights, tuned, windows[:8], (2, 1), config, epochs=0, cache=tmp_path)


def test_the_watch_keeps_the_best_parameters_and_rolls_back_a_collapse() -> None:
    from safeguards.adapters.classifier_training import finetune_watch as fw

    # one label, a linear scorer over 2-d inputs: the first feature tells positives apart
    rng = np.random.default_rng(3)
    target = (np.arange(40) % 2).astype(np.int8)
    rows = [torch.tensor([[float(t) + rng.normal(0, 0.1), rng.normal()]]) for t in target]
    weight = torch.nn.Parameter(torch.tensor([[1.0], [0.0]]))
    optimiser = torch.optim.AdamW([weight], lr=0.1)
    weight.sum().backward()
    optimiser.step()  # the optimiser now holds moments for the weight
    weight.data = torch.tensor([[1.0], [0.0]])

    def stack(cached: Any, idx: Any, hidden: int) -> tuple[Any, Any]:
        return torch.cat([cached[k] for k in idx]), torch.ones(len(idx), 1)

    watch = fw.Watch(lambda x, m: x @ weight, rows, stack, 2, target[:, None],
                     np.ones((40, 1), np.int8), 1, [weight], fw.WatchConfig(batch=16))
    watch.check(100, optimiser)
    assert watch.best_auc == 1.0 and not watch.history[-1].rolled_back
    weight.data = torch.tensor([[-1.0], [0.0]])  # diverged: ranks every positive last
    watch.check(200, optimiser)
    assert watch.history[-1].rolled_back and watch.history[-1].mean_auc == 0.0
    assert torch.equal(weight.detach(), torch.tensor([[1.0], [0.0]]))  # back to the best
    assert watch.lr_scale == [0.5] and not optimiser.state  # moments cleared, rate halved
    weight.data = torch.tensor([[1.0], [0.1]])  # noisier than the best, within the margin
    watch.check(300, optimiser)
    assert not watch.history[-1].rolled_back and watch.best_auc == 1.0
    assert [r.step for r in watch.history] == [100, 200, 300]


def test_sampling_is_fixed_and_ordered_by_length() -> None:
    from safeguards.adapters.classifier_training import finetune_watch as fw

    lengths = [5, 1, 9, 3, 7, 2]
    cfg = fw.WatchConfig(rows=4)
    chosen = fw.sample(lengths, cfg, seed=7)
    assert chosen == fw.sample(lengths, cfg, seed=7) and len(set(chosen)) == 4
    assert [lengths[k] for k in chosen] == sorted(lengths[k] for k in chosen)
    assert fw.sample(lengths[:3], cfg, seed=7) == [1, 0, 2]
