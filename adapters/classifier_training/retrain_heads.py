"""New heads on a fine-tuned encoder kept as it is: a label change tried in minutes, not an hour.

A full fine-tune (``finetune.train``) moves the encoder's low-rank updates and the heads together
and takes about an hour of CPU; a change of labels (a framed harmful ask as a positive of both its
harm category and ``jailbreak``, say) then costs a full run, and twice such runs collapsed without
a trace of why. Here the encoder is the one a previous run tuned (its ``lora_a`` / ``lora_b``
tensors, loaded as they were trained), every training window is read through it once (pooled,
unit length: what the heads see in the served graph), and only the heads are trained on those
embeddings, with the fine-tune's loss, positive weights and optimiser. Every few hundred steps the
spread of the prompt logits over a fixed probe of windows is logged, so a head that stops telling
texts apart shows in the log when it happens.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from safeguards.adapters.classifier.encoder.graph import EncoderConfig
from safeguards.adapters.classifier_training.finetune import (
    _LINEARS,
    Encoder,
    FinetuneConfig,
    Heads,
    Window,
    _bottom_cache,
    _stack,
)

log = logging.getLogger("safeguards.classifier.train")

HEAD_EPOCHS = 6
HEAD_LR = 1e-3
PROBE = 512  # windows whose logit spread is logged


def load_lora(encoder: Encoder, tuned: Mapping[str, np.ndarray]) -> None:
    """Put a trained run's low-rank factors back into ``encoder`` (``lora_b`` is stored scaled)."""
    found = 0
    for n, layer in enumerate(encoder.layers):
        for key, hf in _LINEARS.items():
            lin = layer.lin[key]
            if not lin.rank:
                continue
            stem = f"encoder.layer.{n}.{hf}"
            a, b = tuned[f"{stem}.lora_a"], tuned[f"{stem}.lora_b"]
            with torch.no_grad():
                lin.a.copy_(torch.from_numpy(a))
                lin.b.copy_(torch.from_numpy(b) / lin.scale)
            found += 1
    if not found:
        raise ValueError("the tuned tensors hold no low-rank factors for this encoder")


def pooled_embeddings(encoder: Encoder, windows: Sequence[Window], hidden: int) -> torch.Tensor:
    """Every window through the tuned encoder once: [windows, hidden], as the heads see it."""
    cached = _bottom_cache(encoder, [w.ids for w in windows])
    order = sorted(range(len(windows)), key=lambda k: len(windows[k].ids))
    out = torch.zeros((len(windows), hidden))
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            out[chunk] = encoder.top(*_stack(cached, chunk, hidden))
            if start % 6400 == 0:
                log.info("embedded %d/%d windows", start, len(order))
    return out


def train_heads(cfg: EncoderConfig, weights: dict[str, np.ndarray],
                tuned: Mapping[str, np.ndarray], windows: Sequence[Window],
                head_sizes: Sequence[int], ft: FinetuneConfig, *,
                epochs: int = HEAD_EPOCHS, lr: float = HEAD_LR) -> dict[str, np.ndarray]:
    """The tuned encoder's low-rank factors as they were, with heads trained anew on
    ``windows``; the tensors in ``finetune.train``'s layout."""
    torch.manual_seed(ft.seed)
    torch.set_num_threads(ft.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(ft.seed)
    encoder = Encoder(cfg, weights, ft)
    load_lora(encoder, tuned)
    encoder.eval()
    embedded = pooled_embeddings(encoder, windows, cfg.hidden_size)
    heads = Heads(cfg.hidden_size, head_sizes, ft.head_hidden)
    targets = torch.from_numpy(np.stack([w.target for w in windows]).astype(np.float32))
    tasks = torch.from_numpy(np.stack([w.task for w in windows]).astype(np.float32))
    pos = (targets * tasks).sum(0)
    neg = ((1 - targets) * tasks).sum(0)
    pos_weight = (neg / pos.clamp(min=1)).clamp(max=ft.max_pos_weight)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=ft.weight_decay)
    probe = torch.tensor(rng.sample(range(len(windows)), min(PROBE, len(windows))))
    n_prompt = head_sizes[0]
    steps = 0
    for epoch in range(epochs):
        order = list(range(len(windows)))
        rng.shuffle(order)
        running = 0.0
        for start in range(0, len(order), ft.batch):
            batch = order[start : start + ft.batch]
            logits = heads(embedded[batch])
            loss_each = F.binary_cross_entropy_with_logits(
                logits, targets[batch], pos_weight=pos_weight, reduction="none")
            loss = (loss_each * tasks[batch]).sum() / tasks[batch].sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            running += loss.item()
            steps += 1
        with torch.no_grad():
            spread = heads(embedded[probe])[:, :n_prompt].std(0)
        log.info("heads epoch %d loss %.4f prompt logit spread min %.3f median %.3f", epoch + 1,
                 running / max(1, len(order) // ft.batch), float(spread.min()),
                 float(spread.median()))
    return {**encoder.lora_tensors(), **heads.tensors()}
