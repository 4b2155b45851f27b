"""One model's two scorers in a process: the content stream's and the gates' inline one.

They share one :class:`RecentScores` (a prompt screened inline is not scored again when it
arrives from the stream; a screening its gate gave up on is finished by the stream's scorer) and
one :class:`InferenceLane` (inline first, ``lane``). On the CPU the stream's batches are small
(``BACKGROUND_CPU_CONFIG``), so an inline request never shares the cores long with one.
"""

from __future__ import annotations

from safeguards.adapters.classifier.lane import InferenceLane
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.pending import BACKGROUND_CPU_CONFIG
from safeguards.adapters.classifier.recent import RecentScores
from safeguards.adapters.classifier.scorer import MicroBatchScorer


def stream_and_inline_scorers(model: LoadedModel) -> tuple[MicroBatchScorer, MicroBatchScorer]:
    """The content stream's scorer and the gates' inline scorer of ``model``."""
    recent = RecentScores()
    lane = InferenceLane()
    on_cpu = model.provider == "CPUExecutionProvider"
    stream = MicroBatchScorer(model, BACKGROUND_CPU_CONFIG if on_cpu else None, recent=recent,
                              lane=lane)
    inline = MicroBatchScorer(model, recent=recent, lane=lane, inline=True)
    inline.late_to = stream  # screenings its gates gave up on are finished there
    return stream, inline
