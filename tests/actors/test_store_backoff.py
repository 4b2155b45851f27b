"""The wait between tries of a store that is down: short, capped, jittered, and logged once per
spell rather than once per try (``actors.backoff``)."""

from __future__ import annotations

import functools
import logging

import pytest

from safeguards.actors.backoff import StoreBackoff
from safeguards.actors.settings import NodeSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_to_the_cap_and_are_jittered_below_it() -> None:
    draws = iter([1.0, 0.0, 1.0, 0.0, 1.0, 0.5])
    b = StoreBackoff(0.1, 0.5, rng=lambda: next(draws))
    waits = [b.failed() for _ in range(6)]
    # full (1.0) or half (0.0) of 0.1, 0.2, 0.4, 0.5, 0.5, 0.5
    assert waits == pytest.approx([0.1, 0.1, 0.4, 0.25, 0.5, 0.375])


def test_the_default_settings_retry_an_outage_at_least_every_half_second_without_spinning(
) -> None:
    s = NodeSettings()
    for draw in (0.0, 0.999):
        b = StoreBackoff(s.store_retry_s, s.store_retry_max_s, rng=functools.partial(float, draw))
        waits = [b.failed() for _ in range(50)]
        assert max(waits) <= 0.5
        assert min(waits) >= 0.05  # never a busy loop against a server that is down


def test_a_success_starts_the_next_spell_from_the_first_wait() -> None:
    b = StoreBackoff(0.1, 0.5, rng=lambda: 1.0)
    for _ in range(5):
        b.failed()
    assert b.succeeded(logging.getLogger("t"), "store")
    assert not b.failing
    assert not b.succeeded(logging.getLogger("t"), "store")  # no spell to end
    assert b.failed() == pytest.approx(0.1)


def test_a_spell_is_logged_at_its_start_then_every_log_every_s_and_at_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("t.backoff")
    b = StoreBackoff(0.1, 0.5, log_every_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.backoff"):
        for _ in range(60):  # 30 s of tries every 0.5 s
            b.failed()
            b.log_failure(log, "partition %d: loading failed (%s)", 3, "StoreUnavailable")
            clock.now += 0.5
        b.succeeded(log, "partition %d: loads", 3)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # the spell's start, 10 s and 20 s into it, its end
    assert lines[0].startswith("partition 3: loading failed (StoreUnavailable); retrying")
    assert "20 tries failed in the last 10 s (down for 10 s)" in lines[1]
    assert "20 tries failed in the last 10 s (down for 20 s)" in lines[2]
    assert lines[-1] == "partition 3: loads again after 60 failed tries over 30.0 s"
