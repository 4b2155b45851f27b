"""The node's clock, injected so that tests (and replays) control ``now``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from safeguards.core.steady_time import SteadyReading, steady_reading


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC; what ``decide`` receives as ``now``."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for idleness and deadlines."""
        ...


class SystemClock:
    """The host's clocks. ``now`` does not step when the wall clock does: a step is taken in
    gradually (``core.steady_time``), so event time (strike decay, escalation windows, an
    enforcement's expiry) never leaps forward or goes back. ``wall`` and ``monotonic`` are the
    readings' sources (tests step a wall clock of their own)."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._reading: SteadyReading | None = None
        self._lock = threading.Lock()  # read from the event loop and from worker threads

    def now(self) -> datetime:
        with self._lock:
            self._reading = steady_reading(self._reading, self._wall(), self._monotonic())
            return datetime.fromtimestamp(self._reading.steady, UTC)

    def unabsorbed_s(self) -> float:
        """How far the wall clock is from ``now`` (a step still being taken in)."""
        reading = self._reading
        return 0.0 if reading is None else reading.wall - reading.steady

    def monotonic(self) -> float:
        return self._monotonic()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime, monotonic_start: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start
        self._mono = monotonic_start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
