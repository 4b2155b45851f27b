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

import hashlib
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

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
WARM_START = False  # start from the tuned run's heads rather than fresh ones
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


def embeddings_key(tuned: Mapping[str, np.ndarray], windows: Sequence[Window]) -> str:
    """What a cached embedding of ``windows`` through the tuned encoder is filed under: the
    low-rank factors and every window's token ids."""
    digest = hashlib.sha256()
    for name in sorted(k for k in tuned if k.endswith((".lora_a", ".lora_b"))):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tuned[name], np.float32).tobytes())
    for w in windows:
        digest.update(np.asarray(w.ids, np.int32).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:24]


def cached_embeddings(encoder: Encoder, tuned: Mapping[str, np.ndarray],
                      windows: Sequence[Window], hidden: int, cache: Path | None) -> torch.Tensor:
    """``pooled_embeddings``, kept in ``cache`` (about half an hour of CPU for the recipe's
    windows) under ``embeddings_key``: a label change is then tried in minutes."""
    path = cache / f"heads-embeddings-{embeddings_key(tuned, windows)}.npy" if cache else None
    if path is not None and path.is_file():
        found = np.load(path)
        if found.shape == (len(windows), hidden):
            log.info("embeddings of %d windows read from %s", len(windows), path)
            return torch.from_numpy(found)
        log.warning("ignoring %s: shape %s, expected %s", path, found.shape,
                    (len(windows), hidden))
    embedded = pooled_embeddings(encoder, windows, hidden)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".partial.npy")
        np.save(staged, embedded.numpy())
        os.replace(staged, path)
    return embedded


def warm_heads(heads: Heads, tuned: Mapping[str, np.ndarray]) -> None:
    """Start ``heads`` from a trained run's (``Heads.tensors`` layout, read back)."""
    hw, hb = tuned["heads.hidden.weight"], tuned["heads.hidden.bias"]
    ow, ob = tuned["heads.out.weight"], tuned["heads.out.bias"]
    r = c = 0
    with torch.no_grad():
        for h, o in zip(heads.hidden, heads.out, strict=True):
            nr, nc = h.weight.shape[0], o.weight.shape[0]
            h.weight.copy_(torch.from_numpy(np.ascontiguousarray(hw[:, r : r + nr].T)))
            h.bias.copy_(torch.from_numpy(hb[r : r + nr].copy()))
            o.weight.copy_(torch.from_numpy(np.ascontiguousarray(ow[r : r + nr, c : c + nc].T)))
            o.bias.copy_(torch.from_numpy(ob[c : c + nc].copy()))
            r, c = r + nr, c + nc


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
                epochs: int = HEAD_EPOCHS, lr: float = HEAD_LR, warm: bool = False,
                cache: Path | None = None) -> dict[str, np.ndarray]:
    """The tuned encoder's low-rank factors as they were, with heads trained anew on
    ``windows`` (``warm``: starting from the tuned run's heads); the tensors in
    ``finetune.train``'s layout. ``cache``: where the windows' embeddings are kept."""
    torch.manual_seed(ft.seed)
    torch.set_num_threads(ft.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(ft.seed)
    encoder = Encoder(cfg, weights, ft)
    load_lora(encoder, tuned)
    encoder.eval()
    embedded = cached_embeddings(encoder, tuned, windows, cfg.hidden_size, cache)
    heads = Heads(cfg.hidden_size, head_sizes, ft.head_hidden)
    if warm:
        warm_heads(heads, tuned)
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
