"""What the micro-batching scorer (``scorer``) is configured with, holds per request and
counts, and how it moves its held requests up a line."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream

from safeguards.adapters.classifier.recent import ScoreResult
from safeguards.adapters.classifier.text import PreparedText


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    max_batch: int = 64  # windows per inference call
    max_wait_s: float = 0.002  # how long the first request of a batch may wait for company
    queue_size: int = 2048  # requests waiting to be batched
    enqueue_timeout_s: float = 0.05  # backpressure before ScorerOverloaded
    workers: int = 1  # concurrent inference calls (threads)
    bucket_edges: tuple[int, ...] = (128, 512, 2048)  # window lengths (chars) per bucket
    # With a lane: the longest a batch waits for the inline scorer to finish before it runs anyway
    yield_limit_s: float = 0.25
    max_defer_s: float = 2.0  # held this long, a request moves up a line (urgent: twice as long)


# Background scoring on CPU in batches this small loses nothing (2 cores, 400-character texts:
# 57 texts/s at 4 windows a batch, 54 at 64) and bounds how long an inline request shares the
# cores with a batch already running.
BACKGROUND_CPU_CONFIG = ScorerConfig(max_batch=4)


@dataclass(eq=False)
class PendingScore:
    prepared: PreparedText
    kind: str = "prompt"  # which label set reads the result ("prompt" or "completion")
    done: anyio.Event = field(default_factory=anyio.Event)
    remaining: int = 0
    best: np.ndarray | None = None
    error: BaseException | None = None
    abandoned: bool = False  # the caller stopped waiting (deadline, cancellation)
    line: int = 2  # 0 first, 1 urgent, 2 ordinary: batched ahead of every later line
    held_since: float = 0.0  # when the collector took it off the queue
    result: ScoreResult | None = None  # once computed (``MicroBatchScorer._result``)
    # computed even though its caller gave up: handed over for the stream's item to join
    finish: bool = False
    batched: bool = False  # its windows went into a batch

    def deliver(self, row: np.ndarray) -> None:
        self.best = row.copy() if self.best is None else np.maximum(self.best, row)
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, exc: BaseException) -> None:
        if not self.done.is_set():
            self.error = exc
            self.done.set()


@dataclass
class ScorerStats:
    requests: int = 0
    batches: int = 0
    windows: int = 0
    overloaded: int = 0
    rejected: int = 0
    truncated: int = 0
    reused: int = 0  # answered from RecentScores, no inference
    urgent: int = 0  # requests marked urgent or first (batched ahead of ordinary ones)
    first: int = 0  # requests marked first (ahead of the urgent ones too)
    kept_late: int = 0  # results computed after their caller stopped waiting, kept for reuse
    # requests another scorer of the model was computing, answered by waiting for its result
    # (the stream's item of a prompt whose screening the gate gave up on)
    joined: int = 0
    handed_over: int = 0  # requests given up on before their batch, handed to ``late_to``
    inference_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.windows / self.batches if self.batches else 0.0


def age_held(held: tuple[deque[PendingScore], ...], now: float, defer_s: float) -> None:
    """Held ``defer_s``, an ordinary request moves up a line; twice as long, an urgent one."""
    for line, wait_s in ((2, defer_s), (1, 2 * defer_s)):
        overdue = []
        while held[line] and held[line][0].held_since < now - wait_s:
            overdue.append(held[line].popleft())
        held[line - 1].extend(sorted(overdue, key=lambda p: p.held_since))


async def next_queued(receive: MemoryObjectReceiveStream[PendingScore],
                      remaining: float) -> PendingScore | None:
    """The next queued request, waiting at most ``remaining`` seconds; None on timeout."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        if remaining <= 0:
            return None
    with anyio.move_on_after(remaining):
        return await receive.receive()
    return None
