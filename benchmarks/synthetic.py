"""The synthetic account history the store benchmarks write and read: a repeating cycle of a
request, its score, a strike and an enforcement change (realistic bodies, fixed content)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safeguards.core.events import (
    EnforcementChanged,
    Event,
    EventBody,
    RequestObserved,
    ScoreRecorded,
    StrikeRecorded,
)

REGION = "eu"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CYCLE: list[EventBody] = [
    RequestObserved("r", "model-x", "proxy", 50, 300, 200, "0" * 64, True, "allow"),
    ScoreRecorded("r", "prompt", "1" * 64, 200, "default", "1",
                  (("jailbreak", 0.7), ("cyber", 0.1), ("weapons", 0.01))),
    StrikeRecorded("jailbreak", 0.7, 0.7, 1.4, 86400.0, "strike.threshold", "r", "default", "1",
                   2),
    EnforcementChanged(2, 1, T0 + timedelta(days=1), "points", "escalate.points", 2.0, 3),
]


def synthetic_event(account: str, version: int, causation: str) -> Event:
    return Event(f"{account}/{version}", account, REGION, version,
                 T0 + timedelta(seconds=version), causation, "corr", "2026.11.1",
                 CYCLE[version % len(CYCLE)])
