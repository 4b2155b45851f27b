"""Who goes first on the cores one model's scorers share: the gates' inline scoring.

A gate waits on an inline score within a deadline of tens of milliseconds; the content stream's
background scoring only has to keep up. Both run on the same model and cores, so the inline
scorer holds the lane while it has work and the stream scorer waits its turn before each batch,
at most a bounded time so it is never starved (``scorer_pair.stream_and_inline_scorers``).
"""

from __future__ import annotations

import anyio


class InferenceLane:
    """The scorers of one model in a process: inline (the gates wait on it) goes first.

    ``hold``/``release`` bracket every inline request; background batches ``wait_turn``."""

    def __init__(self) -> None:
        self.inline_busy = 0
        self.waits = 0  # background batches that waited for inline work
        self.waited_s = 0.0
        self._free = anyio.Event()
        self._free.set()

    def hold(self) -> None:
        self.inline_busy += 1
        if self._free.is_set():
            self._free = anyio.Event()

    def release(self) -> None:
        self.inline_busy -= 1
        if self.inline_busy == 0:
            self._free.set()

    async def wait_turn(self, limit_s: float) -> None:
        if self.inline_busy == 0:
            return
        self.waits += 1
        started = anyio.current_time()
        with anyio.move_on_after(limit_s):
            await self._free.wait()
        self.waited_s += anyio.current_time() - started
