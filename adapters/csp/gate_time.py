"""The time the inline gate reads: Unix seconds that do not step with the host's wall clock.

The gate judges three things by the time it is given: whether an enforcement command has expired
(its ``expires_at``, the node's event time), its GCRA rate limits (arrival times up to a window
ahead) and the staleness of its feed (the last contact). Read off ``time.time`` directly, a
wall-clock step would break each: forward an hour, every enforcement with less than an hour left
ends at once; backward an hour, a throttled account waits an hour and a feed that falls silent
is not noticed as stale for an hour. ``gate_now`` takes a step in gradually instead
(``core.steady_time``), the same way the nodes' clock does (``actors.clock.SystemClock``).

What compares the gate's time with another host's as a wall clock keeps ``time.time``: a caller
assertion's skew (its timestamp is the caller's clock; its replay table is keyed on that
timestamp, so a step cannot reopen a window) and the cross-region board's epochs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from safeguards.core.steady_time import SteadyReading, steady_reading


class SteadyTime:
    """A ``time.time`` whose steps are absorbed; ``wall`` and ``monotonic`` are its readings'
    sources (tests step a wall clock of their own)."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._reading: SteadyReading | None = None
        self._lock = threading.Lock()  # a worker thread may read it beside the event loop

    def __call__(self) -> float:
        with self._lock:
            self._reading = steady_reading(self._reading, self._wall(), self._monotonic())
            return self._reading.steady

    def unabsorbed_s(self) -> float:
        """How far the wall clock is from this time (a step still being taken in)."""
        reading = self._reading
        return 0.0 if reading is None else reading.wall - reading.steady


gate_now = SteadyTime()  # one per process: the feed, the checks and the metrics share its timeline
