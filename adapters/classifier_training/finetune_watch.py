"""Held-out readings during a fine-tune, and the roll-back that keeps a diverging run from ending
collapsed.

Three end-to-end fine-tunes (2026-12-04 twice, 2026-12-06) ended with a tuned tower that answered
nearly the same for every text (calibration ROC AUC 0.41-0.61) while others with the same settings
and slightly different data did not: the post-LN encoder with rank-16 updates on every linear map
sits near the edge of stability, and a run was only judged after 80 minutes. Now, every
``watch_every`` steps, the tower and heads read a fixed sample of calibration windows (rows the fit
never sees); the parameters with the best mean prompt ROC AUC so far are kept; a reading more than
``max_auc_drop`` below the best rolls the parameters back to them, clears the optimiser's moments
and halves the learning rate for the rest of the run. The run returns the best parameters, not the
last ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from safeguards.adapters.classifier_training.ood import roc_auc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    every: int = 400  # optimiser steps between readings
    rows: int = 1500  # calibration windows read at each reading
    max_auc_drop: float = 0.06  # below the best by more than this: roll back and halve the rate
    min_auc: float = 0.55  # a reading at or below this (near chance) also rolls back
    batch: int = 64


@dataclass(slots=True)
class Reading:
    step: int
    mean_auc: float
    per_label: dict[int, float]
    rolled_back: bool = False


@dataclass(slots=True)
class Watch:
    """Reads ``x``/``mask`` (the frozen layers' output for the sampled windows) through the
    trainable top and heads; keeps the best parameters."""

    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    cached: Sequence[torch.Tensor]  # the frozen layers' output per sampled window, by length
    stack: Callable[[Sequence[torch.Tensor], Sequence[int], int],
                    tuple[torch.Tensor, torch.Tensor]]
    hidden: int
    targets: np.ndarray  # [rows, labels]
    tasks: np.ndarray
    labels: int  # the first ``labels`` columns are averaged (the prompt categories)
    params: list[torch.nn.Parameter]
    cfg: WatchConfig
    lr_scale: list[float] = field(default_factory=lambda: [1.0])
    best_auc: float = -1.0
    best: list[torch.Tensor] = field(default_factory=list)
    history: list[Reading] = field(default_factory=list)

    def read(self) -> Reading:
        n, size = len(self.cached), self.cfg.batch
        with torch.no_grad():
            scores = np.concatenate([
                self.encode(*self.stack(self.cached, range(i, min(i + size, n)),
                                        self.hidden)).float().numpy()
                for i in range(0, n, size)])
        per_label: dict[int, float] = {}
        for j in range(self.labels):
            sel = self.tasks[:, j] > 0
            pos = self.targets[sel, j] > 0
            if 0 < pos.sum() < sel.sum():
                per_label[j] = roc_auc(scores[sel, j], pos)
        mean = float(np.mean(list(per_label.values()))) if per_label else 0.0
        return Reading(0, mean, per_label)

    def check(self, step: int, optimiser: torch.optim.Optimizer) -> None:
        """One reading at ``step``; keeps, or rolls back to, the best parameters."""
        reading = self.read()
        reading.step = step
        if reading.mean_auc > self.best_auc:
            self.best_auc = reading.mean_auc
            self.best = [p.detach().clone() for p in self.params]
        elif (reading.mean_auc < self.best_auc - self.cfg.max_auc_drop
              or reading.mean_auc <= self.cfg.min_auc):
            self.restore()
            optimiser.state.clear()
            self.lr_scale[0] *= 0.5
            reading.rolled_back = True
        self.history.append(reading)
        log.info("watch step %d: held-out mean ROC AUC %.4f (best %.4f) by label %s%s", step,
                 reading.mean_auc, self.best_auc,
                 " ".join(f"{j}:{a:.3f}" for j, a in reading.per_label.items()),
                 f"; rolled back, learning rate x{self.lr_scale[0]:g}" if reading.rolled_back
                 else "")

    def restore(self) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, self.best, strict=True):
                p.copy_(saved)


def sample(lengths: Sequence[int], cfg: WatchConfig, seed: int) -> list[int]:
    """Which calibration windows the watch reads: a fixed sample, shortest first (fewer pads)."""
    n = len(lengths)
    chosen = range(n) if n <= cfg.rows else random.Random(seed).sample(range(n), cfg.rows)
    return sorted(chosen, key=lambda k: (lengths[k], k))

