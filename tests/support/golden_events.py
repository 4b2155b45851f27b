"""The stored events of the golden histories, decoded, for tests that need a real history."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safeguards.core import codec
from safeguards.core.events import EnforcementChanged, Event, RequestObserved, ScoreRecorded

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_history(index: int = 0, name: str = "history-2026-11-v1.jsonl") -> list[Event]:
    histories: list[list[Event]] = []
    for line in (GOLDEN / name).read_text().splitlines():
        record = json.loads(line)
        if "account" in record:
            histories.append([])
        for raw in record.get("events", []):
            histories[-1].append(codec.decode_event(base64.b64decode(raw)))
    return histories[index]


def benign_history(account: str, n: int,
                   t0: datetime = datetime(2026, 11, 1, tzinfo=UTC)) -> tuple[Event, ...]:
    """``n`` events of an everyday account in region eu, a minute apart from ``t0``: requests
    and low cyber scores only, nothing any of the tests' policies strikes on."""
    return tuple(
        Event(f"{account}/{v}", account, "eu", v, t0 + timedelta(minutes=v), f"c{v}", "k", None,
              ScoreRecorded(f"r{v}", "prompt", f"{v:064x}", 10, "m", "1", (("cyber", 0.2),))
              if v % 2 else RequestObserved(f"r{v}", "m", "proxy", 1, 1, 10, "0" * 64, False,
                                            "allow"))
        for v in range(1, n + 1))


def rerouted_history(changes: dict[int, tuple[int, int, str]]) -> list[Event]:
    """The first golden history with the enforcement changes at the given versions stored as
    (previous level, level, rule) instead: what a different policy made of the same facts.
    (Its changes are L1 at v14, L0 at v30, L1 at v36, L2 at v40, L3 at v56, L4 at v74 and L0 at
    v76; the last observation before v36 is v34, before v40 v38.)"""
    history = golden_history()
    for version, (previous, level, rule) in changes.items():
        e = history[version - 1]
        assert isinstance(e.body, EnforcementChanged) and e.version == version
        history[version - 1] = dataclasses.replace(e, body=dataclasses.replace(
            e.body, previous_level=previous, level=level, rule_id=rule))
    return history
