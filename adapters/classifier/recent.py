"""A score and the newest scores of one model, shared by the scorers of that model in a process.

A prompt screened inline is not run through the model a second time when its content item
arrives from the stream a moment later: same model, same text, same result (inference is
deterministic). That holds also for a screening whose gate stopped waiting (its deadline) while
its batch was already running: the scorer keeps the result it computed (``scorer``), and for
one whose batch had not started yet: the inline scorer finishes it while it has nothing else to
do, and the stream's item of the same text waits for that result (``running``) instead of
queueing a second computation behind the stream's backlog.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import anyio

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
        # computations under way whose result will be put here: set when it is (or failed)
        self._running: OrderedDict[tuple[str, str, str], anyio.Event] = OrderedDict()

    @staticmethod
    def _model_id(model: LoadedModel) -> str:
        return model.manifest.sha256 or f"{model.name} {model.version}"

    def get(self, model: LoadedModel, kind: str, sha256: str) -> ScoreResult | None:
        return self._results.get((self._model_id(model), kind, sha256))

    def computing(self, model: LoadedModel, kind: str, sha256: str, done: anyio.Event) -> None:
        """A scorer computes this text's result and puts it here by the time ``done`` is set."""
        key = (self._model_id(model), kind, sha256)
        self._running[key] = done
        self._running.move_to_end(key)
        while len(self._running) > self.capacity:
            self._running.popitem(last=False)

    def running(self, model: LoadedModel, kind: str, sha256: str) -> anyio.Event | None:
        """The ``done`` of a computation of this text still under way; None when there is none."""
        key = (self._model_id(model), kind, sha256)
        done = self._running.get(key)
        if done is not None and done.is_set():
            del self._running[key]
            return None
        return done

    def put(self, model: LoadedModel, kind: str, result: ScoreResult) -> None:
        key = (self._model_id(model), kind, result.content_sha256)
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self.capacity:
            self._results.popitem(last=False)
