"""Unix time that does not step when the host's wall clock does.

A node stamps events (strike decay, escalation windows and an enforcement's ``expires_at`` are all
event time), and a gate compares ``expires_at``, its rate limits' arrival times and its feed's
last contact with the time it reads. A wall clock that steps (an NTP step, an operator's ``date``,
a VM resumed) would move all of them at once: forward, enforcements end early and strikes decay
an hour in an instant; backward, a throttle lasts an hour and a silent feed never looks stale.

``steady_reading`` turns (wall, monotonic) readings into Unix seconds that advance with the
monotonic clock and follow the wall clock's slew (NTP slews at most 500 ppm) but take a step
in at no more than ``ABSORB_RATE`` seconds per second, so time never goes back and never leaps.
The cost: until a step is absorbed (an hour's step in 100 hours), this process judges time by
the clock it had before the step. A process that starts after a step starts on the stepped clock.

Pure: the readings are the caller's (``actors.clock.SystemClock``, ``adapters.csp.gate_time``).
"""

from __future__ import annotations

from dataclasses import dataclass

ABSORB_RATE = 0.01  # seconds of a step taken in per second that passes (one hour in 100 hours)


@dataclass(frozen=True, slots=True)
class SteadyReading:
    steady: float  # Unix seconds, never less than the previous reading's
    mono: float  # the monotonic reading it was taken at
    wall: float  # the wall clock's reading then (how far a step is still to absorb: wall - steady)


def steady_reading(previous: SteadyReading | None, wall: float, mono: float, *,
                   rate: float = ABSORB_RATE) -> SteadyReading:
    """The steady time at (``wall``, ``mono``), given the ``previous`` reading (None: the first,
    which is the wall clock itself)."""
    if previous is None:
        return SteadyReading(wall, mono, wall)
    elapsed = max(0.0, mono - previous.mono)
    steady = previous.steady + elapsed
    allowed = rate * elapsed
    steady += min(max(wall - steady, -allowed), allowed)
    return SteadyReading(steady, max(mono, previous.mono), wall)
