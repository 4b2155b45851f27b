"""Steady time: a wall-clock step is taken in gradually, slew is followed, time never goes back."""

from __future__ import annotations

import itertools

import pytest

from safeguards.core.steady_time import ABSORB_RATE, SteadyReading, steady_reading

T0 = 1_800_000_000.0


def run(steps: list[tuple[float, float]]) -> list[SteadyReading]:
    """Readings at (wall, mono) pairs, in order."""
    out: list[SteadyReading] = []
    reading = None
    for wall, mono in steps:
        reading = steady_reading(reading, wall, mono)
        out.append(reading)
    return out


@pytest.mark.parametrize("step_s", [3600.0, -3600.0])
def test_a_step_is_taken_in_at_the_absorb_rate_and_time_never_goes_back(step_s: float) -> None:
    # one reading a second for a minute, then the wall clock steps and readings go on
    before = [(T0 + i, float(i)) for i in range(60)]
    after = [(T0 + i + step_s, float(i)) for i in range(60, 600)]
    readings = run(before + after)
    assert readings[59].steady == pytest.approx(T0 + 59)
    # a second after the step: one second on, plus at most 1 % of a second of the step
    sign = 1 if step_s > 0 else -1
    assert readings[60].steady - readings[59].steady == pytest.approx(1 + sign * ABSORB_RATE)
    # 540 seconds after the step, 5.4 s of it taken in, in the step's direction
    taken = readings[-1].steady - (T0 + 599)
    assert taken == pytest.approx(sign * ABSORB_RATE * 540)
    assert readings[-1].wall - readings[-1].steady == pytest.approx(step_s - taken)
    assert all(b.steady >= a.steady for a, b in itertools.pairwise(readings))


def test_a_step_is_absorbed_completely_then_followed_exactly() -> None:
    readings = run([(T0, 0.0), (T0 + 10 + 50, 10.0), (T0 + 20_000 + 50, 20_000.0),
                    (T0 + 20_001 + 50, 20_001.0)])
    assert readings[2].steady == pytest.approx(T0 + 20_000 + 50)  # 50 s within 200 s allowed
    assert readings[3].steady == pytest.approx(T0 + 20_001 + 50)


def test_ntp_slew_is_followed_exactly() -> None:
    # 500 ppm, the most an NTP daemon slews, for an hour: well under the absorb rate
    readings = run([(T0 + i * 1.0005, float(i)) for i in range(0, 3601, 60)])
    assert all(r.steady == pytest.approx(r.wall) for r in readings)


def test_a_monotonic_clock_that_stalls_or_goes_back_holds_time_still() -> None:
    readings = run([(T0, 100.0), (T0 + 5, 99.0), (T0 + 6, 100.5)])
    assert readings[1].steady == T0  # nothing elapsed by the monotonic clock: nothing moves
    assert readings[2].steady == pytest.approx(T0 + 0.5 + ABSORB_RATE * 0.5)
