"""A score and the newest scores of one model, shared by the scorers of that model in a process.

A prompt screened inline is not run through the model a second time when its content item
arrives from the stream a moment later: same model, same text, same result (inference is
deterministic). That holds also for a screening whose gate stopped waiting (its deadline) while
its batch was already running: the scorer keeps the result it computed (``scorer``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.core.events import Scores


@dataclass(frozen=True, slots=True)
class ScoreResult:
    model_name: str
    model_version: str
    scores: Scores  # (category, calibrated probability), in manifest order
    content_sha256: str
    content_chars: int
    truncated: bool
    windows: int

    def flagged(self, thresholds: dict[str, float]) -> list[str]:
        return [c for c, s in self.scores if s >= thresholds.get(c, math.inf)]


class RecentScores:
    """The newest results of one model, by content kind and text digest."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._results: OrderedDict[tuple[str, str, str], ScoreResult] = OrderedDict()

    @staticmethod
    def _model_id(model: LoadedModel) -> str:
        return model.manifest.sha256 or f"{model.name} {model.version}"

    def get(self, model: LoadedModel, kind: str, sha256: str) -> ScoreResult | None:
        return self._results.get((self._model_id(model), kind, sha256))

    def put(self, model: LoadedModel, kind: str, result: ScoreResult) -> None:
        key = (self._model_id(model), kind, result.content_sha256)
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self.capacity:
            self._results.popitem(last=False)
