"""The served two-tower model as a cascade: the semantic tower reads only the windows the tuned
tower leaves in doubt.

The semantic tower (the pretrained encoder read in full, frozen, with heads of its own) costs
twice the tuned one; run on every window it made the classifier 2.6 times slower on the CPU. Its
contribution to a category's blended logit is ``semantic * blend.semantic``; the blend
standardises both towers on benign text, so the semantic tower's benign median (``cascade.fill``)
stands for it wherever it is not run. A window is escalated when its blended logit with that
stand-in reaches ``cascade.gate`` in any blended category: the gate is set in training at a
share of the calibration split's benign windows (``classifier_training/semantic.py``), so most
benign windows never reach the second tower while every window that could come near a
threshold does. Calibration and the out-of-distribution figures are read through this same
cascade, so the served scores are the ones reported.

Windows are independent, so escalation is decided per window and a long text pays only for
its doubtful windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.graph import LOGITS, SEMANTIC, SHARED_HIDDEN
from safeguards.adapters.classifier.errors import ModelLoadError

GATE = "cascade.gate"
FILL = "cascade.fill"
BLEND = ("blend.tuned", "blend.semantic", "blend.bias")
CASCADE_KEYS = (GATE, FILL)


@dataclass(frozen=True, slots=True)
class Blend:
    """Per-label blend of the two towers' logits, and the escalation rule."""

    tuned: np.ndarray
    semantic: np.ndarray
    bias: np.ndarray
    fill: np.ndarray  # the semantic logit assumed for a window the semantic tower did not read
    gate: float  # escalate a window whose screened blended logit reaches this in any category

    @classmethod
    def from_trained(cls, trained: Mapping[str, np.ndarray]) -> Blend | None:
        """The blend of a cascade model's trained tensors; None for a model without one."""
        if GATE not in trained:
            return None
        missing = [k for k in (*BLEND, FILL) if k not in trained]
        if missing:
            raise ModelLoadError(f"cascade model lacks {', '.join(missing)}")
        tuned, semantic, bias, fill = (np.asarray(trained[k], np.float64)
                                       for k in (*BLEND, FILL))
        gate = np.asarray(trained[GATE], np.float64).reshape(-1)
        if gate.size != 1 or not all(a.shape == tuned.shape for a in (semantic, bias, fill)):
            raise ModelLoadError("cascade tensors do not fit each other")
        if not np.all(np.isfinite(np.concatenate([tuned, semantic, bias, fill]))) \
                or np.isnan(gate[0]):
            raise ModelLoadError("cascade tensors hold a non-finite value")
        return cls(tuned, semantic, bias, fill, float(gate[0]))

    @property
    def blended(self) -> np.ndarray:
        """The label columns the semantic tower contributes to."""
        return np.flatnonzero(self.semantic)

    def screen(self, tuned: np.ndarray) -> np.ndarray:
        """Blended logits with the stand-in for the semantic tower."""
        out: np.ndarray = tuned * self.tuned + self.fill * self.semantic + self.bias
        return out

    def escalate(self, screened: np.ndarray, gate: float | None = None) -> np.ndarray:
        """Which windows (rows) the semantic tower must read, from their screened logits (at
        ``gate``, by default the trained one)."""
        cols = self.blended
        if cols.size == 0:
            return np.zeros(screened.shape[0], bool)
        return np.asarray(screened[:, cols].max(axis=1) >= (self.gate if gate is None else gate))

    def combine(self, tuned: np.ndarray, semantic: np.ndarray) -> np.ndarray:
        out: np.ndarray = tuned * self.tuned + semantic * self.semantic + self.bias
        return out

    def apply(self, tuned: np.ndarray, read_semantic: Callable[[np.ndarray], np.ndarray],
              gate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The cascade over a batch of windows' tuned logits: blended logits, and which windows
        were escalated. ``read_semantic(escalated)`` gives the semantic logits of the escalated
        rows (the served graph runs them; training reads them from both towers' readings)."""
        out = self.screen(tuned)
        escalate = self.escalate(out, gate)
        if escalate.any():
            out[escalate] = self.combine(tuned[escalate], read_semantic(escalate))
        return out, escalate


@dataclass
class CascadeStats:
    windows: int = 0
    escalated: int = 0


class CascadeRunner:
    """Runs one batch of windows through the screening graph, then the escalated ones through
    the semantic graph (ONNX Runtime sessions); returns blended logits."""

    def __init__(self, screen: Any, semantic: Any, blend: Blend) -> None:
        self.screen_session, self.semantic_session, self.blend = screen, semantic, blend
        self.stats = CascadeStats()

    def _screen(self, feed: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tuned, hidden = self.screen_session.run([LOGITS, SHARED_HIDDEN], dict(feed))
        return np.asarray(tuned, np.float64), hidden

    def _semantic(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        width = max(1, int(mask.sum(axis=1).max()))  # drop the padding the screen batch needed
        out = self.semantic_session.run(
            [SEMANTIC], {SHARED_HIDDEN: np.ascontiguousarray(hidden[:, :width]),
                         "attention_mask": np.ascontiguousarray(mask[:, :width])})[0]
        return np.asarray(out, np.float64)

    def run(self, feed: Mapping[str, np.ndarray], mask: np.ndarray,
            gate: float | None = None) -> np.ndarray:
        """Blended logits of one batch of windows: ``feed`` is the screening graph's input (token
        ids and mask under the manifest's names), ``mask`` the attention mask itself; ``gate``
        overrides the trained escalation gate (a prompt's fragments, ``fragments.py``)."""
        tuned, hidden = self._screen(feed)
        out, escalate = self.blend.apply(
            tuned, lambda rows: self._semantic(hidden[rows], mask[rows]), gate)
        self.stats.windows += len(mask)
        self.stats.escalated += int(escalate.sum())
        return out

    def towers(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both towers' logits for every window, escalated or not (training sets the gate and
        calibrates from these)."""
        tuned, hidden = self._screen({"input_ids": ids, "attention_mask": mask})
        return tuned, self._semantic(hidden, mask)
