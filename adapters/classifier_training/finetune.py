"""Fine-tune the encoder's top layers (low-rank updates) and the heads, with PyTorch on the CPU.

A frozen encoder reads harm by topic; fine-tuning teaches it intent ("how do I get rid of a
body" vs "how do I get rid of a wasp nest"). To fit a 2-core machine, the bottom layers stay
frozen and run once: their output for every training window is cached (fp16), and each epoch
only runs the top layers, which carry rank-``r`` updates (``W + B A``) on all six linear maps,
followed by the heads (a ReLU hidden layer each for prompts and completions). What is saved is
small: the low-rank factors and the heads (``trained.safetensors``), merged into the served
graph by ``encoder/graph.py``.

Determinism: fixed seeds, deterministic algorithms, a fixed thread count and sorted inputs.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from safeguards.adapters.classifier.encoder.graph import EncoderConfig
from safeguards.adapters.classifier_training import finetune_watch as fw

log = logging.getLogger(__name__)

_LINEARS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "o": "attention.output.dense", "i": "intermediate.dense", "f": "output.dense"}


@dataclass(frozen=True, slots=True)
class FinetuneConfig:
    trainable_from: int = 2  # layers below this are frozen and cached
    rank: int = 16
    alpha: float = 32.0
    head_hidden: int = 256
    epochs: int = 2
    batch: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    max_pos_weight: float = 10.0
    pair_batch: int = 16  # translation pairs per step, pulled together (languages stay aligned)
    # 0 turns the translation-pair loss off (the default: a run with it at 1.0, together with
    # more generated jailbreak frames and refusals, fell from OOD ROC AUC 0.85 to 0.63)
    pair_weight: float = 0.0
    threads: int = 2
    seed: int = 20261201
    watch: fw.WatchConfig = field(default_factory=fw.WatchConfig)


@dataclass(frozen=True, slots=True)
class Window:
    ids: list[int]
    target: np.ndarray  # [labels] 0/1
    task: np.ndarray  # [labels] 1 where this window supervises the label


class _Lora(nn.Module):  # type: ignore[misc]
    def __init__(self, weight: np.ndarray, bias: np.ndarray, rank: int, alpha: float) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weight.copy()))
        self.register_buffer("bias", torch.from_numpy(bias.copy()))
        out_f, in_f = weight.shape
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        if rank:
            self.a = nn.Parameter(torch.randn(rank, in_f) / math.sqrt(in_f))
            self.b = nn.Parameter(torch.zeros(out_f, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.rank:
            y = y + (x @ self.a.t() @ self.b.t()) * self.scale
        return y


class _Layer(nn.Module):  # type: ignore[misc]
    def __init__(self, w: dict[str, np.ndarray], n: int, rank: int, alpha: float) -> None:
        super().__init__()
        p = f"encoder.layer.{n}."
        self.lin = nn.ModuleDict({k: _Lora(w[f"{p}{hf}.weight"], w[f"{p}{hf}.bias"], rank, alpha)
                                  for k, hf in _LINEARS.items()})
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            stem = "ln1" if name.startswith("attention") else "ln2"
            self.register_buffer(f"{stem}_w", torch.from_numpy(w[f"{p}{name}.weight"].copy()))
            self.register_buffer(f"{stem}_b", torch.from_numpy(w[f"{p}{name}.bias"].copy()))


class Encoder(nn.Module):  # type: ignore[misc]
    """BERT in PyTorch from the same weights the served graph is written from."""

    def __init__(self, cfg: EncoderConfig, w: dict[str, np.ndarray], ft: FinetuneConfig) -> None:
        super().__init__()
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.cfg = cfg
        self.from_layer = ft.trainable_from
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            self.register_buffer(name, torch.from_numpy(w[f"embeddings.{name}.weight"].copy()))
        self.register_buffer("eln_w", torch.from_numpy(w["embeddings.LayerNorm.weight"].copy()))
        self.register_buffer("eln_b", torch.from_numpy(w["embeddings.LayerNorm.bias"].copy()))
        self.layers = nn.ModuleList(
            _Layer(w, n, ft.rank if n >= ft.trainable_from else 0, ft.alpha)
            for n in range(cfg.num_layers))

    def _layer(self, layer: _Layer, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        heads = self.cfg.num_heads
        d = h // heads
        lin = layer.lin

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, heads, d).transpose(1, 2)

        q, k, v = split(lin["q"](x)), split(lin["k"](x)), split(lin["v"](x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, -1)
        ctx = (attn @ v).transpose(1, 2).reshape(b, s, h)
        eps = self.cfg.layer_norm_eps
        x = F.layer_norm(lin["o"](ctx) + x, (h,), layer.ln1_w, layer.ln1_b, eps)
        return F.layer_norm(lin["f"](F.gelu(lin["i"](x))) + x, (h,), layer.ln2_w, layer.ln2_b,
                            eps)

    @staticmethod
    def _bias(mask: torch.Tensor) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].float()) * -10000.0

    def bottom(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        x = (self.word_embeddings[ids] + self.position_embeddings[:s][None]
             + self.token_type_embeddings[0])
        x = F.layer_norm(x, (self.cfg.hidden_size,), self.eln_w, self.eln_b,
                         self.cfg.layer_norm_eps)
        bias = self._bias(mask)
        for layer in self.layers[: self.from_layer]:
            x = self._layer(layer, x, bias)
        return x

    def top(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = self._bias(mask)
        for layer in self.layers[self.from_layer :]:
            x = self._layer(layer, x, bias)
        m = mask.float()[..., None]
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def lora_tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for n, layer in enumerate(self.layers):
            for key, hf in _LINEARS.items():
                lin = layer.lin[key]
                if lin.rank:
                    stem = f"encoder.layer.{n}.{hf}"
                    out[f"{stem}.lora_a"] = lin.a.detach().numpy().astype(np.float32)
                    out[f"{stem}.lora_b"] = (lin.b.detach() * lin.scale).numpy().astype(
                        np.float32)
        return out


class Heads(nn.Module):  # type: ignore[misc]
    """Prompt and completion heads side by side: one hidden layer each, one output block."""

    def __init__(self, hidden_size: int, sizes: Sequence[int], hidden: int) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(hidden_size, hidden) for _ in sizes)
        self.out = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return torch.cat([o(F.relu(h(e))) for h, o in zip(self.hidden, self.out, strict=True)],
                         -1)

    def tensors(self) -> dict[str, np.ndarray]:
        hw = torch.cat([h.weight.detach().t() for h in self.hidden], 1)
        hb = torch.cat([h.bias.detach() for h in self.hidden])
        rows = [h.weight.shape[0] for h in self.hidden]
        cols = [o.weight.shape[0] for o in self.out]
        ow = torch.zeros(sum(rows), sum(cols))
        r = c = 0
        for o, nr, nc in zip(self.out, rows, cols, strict=True):
            ow[r : r + nr, c : c + nc] = o.weight.detach().t()
            r, c = r + nr, c + nc
        ob = torch.cat([o.bias.detach() for o in self.out])
        return {"heads.hidden.weight": hw.numpy().astype(np.float32),
                "heads.hidden.bias": hb.numpy().astype(np.float32),
                "heads.out.weight": ow.numpy().astype(np.float32),
                "heads.out.bias": ob.numpy().astype(np.float32)}


def _pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _bottom_cache(encoder: Encoder, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The frozen layers' output for every window (fp16), computed once."""
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    cached: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            ids, mask = _pad([rows[k] for k in chunk])
            out = encoder.bottom(ids, mask).to(torch.float16)
            for row, k in enumerate(chunk):
                cached[k] = out[row, : len(rows[k])].clone()
    return cached


def _stack(cached: Sequence[torch.Tensor], idx: Sequence[int],
           hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(cached[k]) for k in idx)
    x = torch.zeros((len(idx), width, hidden))
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, k in enumerate(idx):
        n = len(cached[k])
        x[row, :n] = cached[k].float()
        mask[row, :n] = 1
    return x, mask


def train(cfg: EncoderConfig, weights: dict[str, np.ndarray], windows: Sequence[Window],
          head_sizes: Sequence[int], ft: FinetuneConfig,
          pairs: Sequence[tuple[Sequence[int], Sequence[int]]] = (),
          held_out: Sequence[Window] = ()) -> dict[str, np.ndarray]:
    """Fine-tune on ``windows`` (and keep the token windows of each translation pair in
    ``pairs`` close); the trained tensors (low-rank factors and heads). With ``held_out``
    windows, a sample of them is read as training goes and the best parameters are returned
    (``finetune_watch``)."""
    torch.manual_seed(ft.seed)
    torch.set_num_threads(ft.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(ft.seed)
    encoder = Encoder(cfg, weights, ft)
    heads = Heads(cfg.hidden_size, head_sizes, ft.head_hidden)
    order = sorted(range(len(windows)), key=lambda k: len(windows[k].ids))
    cached = _bottom_cache(encoder, [w.ids for w in windows])
    pair_cache = _bottom_cache(encoder, [side for pair in pairs for side in pair])
    log.info("cached the frozen layers' output for %d windows and %d translation pairs",
             len(windows), len(pairs))
    targets = torch.from_numpy(np.stack([w.target for w in windows]).astype(np.float32))
    tasks = torch.from_numpy(np.stack([w.task for w in windows]).astype(np.float32))
    pos = (targets * tasks).sum(0)
    neg = ((1 - targets) * tasks).sum(0)
    pos_weight = (neg / pos.clamp(min=1)).clamp(max=ft.max_pos_weight)
    params = [p for p in (*encoder.parameters(), *heads.parameters()) if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay)
    batches = [order[i : i + ft.batch] for i in range(0, len(order), ft.batch)]
    total = len(batches) * ft.epochs
    watch = _watch(encoder, heads, held_out, params, head_sizes[0], ft)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: watch.lr_scale[0] * min(1.0, (step + 1) / (0.05 * total)) * max(
            0.0, (total - step) / total))
    done = 0
    for epoch in range(ft.epochs):
        rng.shuffle(batches)
        running = 0.0
        for step, batch in enumerate(batches):
            x, mask = _stack(cached, batch, cfg.hidden_size)
            logits = heads(encoder.top(x, mask))
            loss_each = F.binary_cross_entropy_with_logits(
                logits, targets[batch], pos_weight=pos_weight, reduction="none")
            loss = (loss_each * tasks[batch]).sum() / tasks[batch].sum().clamp(min=1)
            if pairs:
                chosen = [rng.randrange(len(pairs)) for _ in range(ft.pair_batch)]
                left = encoder.top(*_stack(pair_cache, [2 * k for k in chosen],
                                           cfg.hidden_size))
                right = encoder.top(*_stack(pair_cache, [2 * k + 1 for k in chosen],
                                            cfg.hidden_size))
                loss = loss + ft.pair_weight * (1 - (left * right).sum(-1)).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            running += loss.item()
            done += 1
            if (step + 1) % 200 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch + 1, step + 1, len(batches),
                         running / 200)
                running = 0.0
            if held_out and done % ft.watch.every == 0:
                watch.check(done, optimiser)
    if held_out:
        watch.check(done, optimiser)
        watch.restore()
        log.info("returning the parameters of held-out mean ROC AUC %.4f", watch.best_auc)
    return {**encoder.lora_tensors(), **heads.tensors()}


def _watch(encoder: Encoder, heads: Heads, held_out: Sequence[Window],
           params: list[nn.Parameter], prompt_labels: int, ft: FinetuneConfig) -> fw.Watch:
    chosen = fw.sample([len(w.ids) for w in held_out], ft.watch, ft.seed)
    sampled = [held_out[k] for k in chosen]
    cached = _bottom_cache(encoder, [w.ids for w in sampled])
    targets = np.stack([w.target for w in sampled]) if sampled else np.zeros((0, 0))
    tasks = np.stack([w.task for w in sampled]) if sampled else np.zeros((0, 0))
    return fw.Watch(lambda x, m: heads(encoder.top(x, m)), cached, _stack,
                    encoder.cfg.hidden_size, targets, tasks, prompt_labels, params, ft.watch)
