"""Replays the golden histories under tests/golden/ (see make_golden.py for what they freeze)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from safeguards.core import codec
from safeguards.core.decide import decide
from safeguards.core.policy import parse_policy
from safeguards.core.state import fold, initial_state

from make_golden import state_json

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _histories(path: Path) -> list[list[dict[str, Any]]]:
    histories: list[list[dict[str, Any]]] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "account" in record:
            histories.append([])
        histories[-1].append(record)
    return histories


FILES = sorted(GOLDEN.glob("history-*.jsonl"))


def test_there_are_golden_histories() -> None:
    assert FILES, "tests/golden holds no history"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden_history_replays_exactly(path: Path) -> None:
    for history in _histories(path):
        head, steps, tail = history[0], history[1:-1], history[-1]
        policy = parse_policy((GOLDEN / head["policy"]).read_text())
        stored_state = initial_state(head["account"], head["region"])
        decided_state = stored_state
        for step in steps:
            # 1. What was stored then still decodes (old schema versions upcast) and folds.
            stored = [codec.decode_event(base64.b64decode(e)) for e in step["events"]]
            stored_state = fold(stored_state, stored)
            # 2. The same signal through today's decide makes the same decisions.
            signal = codec.decode_signal(base64.b64decode(step["signal"]))
            now = datetime.fromisoformat(step["now"])
            decided = decide(decided_state, signal, policy, now)
            assert decided == stored, f"decision for {signal.signal_id} changed"
            decided_state = fold(decided_state, decided)
        # fields AccountState gained after the file was written are not in it: the frozen ones
        # must still come out exactly as they were
        frozen = tail["final_state"]
        final = state_json(stored_state)
        assert {k: final[k] for k in frozen} == frozen
        assert decided_state == stored_state
