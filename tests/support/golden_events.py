"""The stored events of the golden histories, decoded, for tests that need a real history."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from safeguards.core import codec
from safeguards.core.events import Event

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
