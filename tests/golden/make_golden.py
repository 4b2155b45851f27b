"""Writes a golden history. Run once per new golden file; never regenerate an existing one.

A golden file freezes what an old build wrote: its signals and events as they were encoded then
(RequestObserved at schema v1 here, before ``surface`` existed), and the state they fold to. CI
replays them (tests/core/test_golden.py): a change to the codec, the upcasters, ``evolve`` or
``decide`` that alters an old history fails loudly instead of silently rewriting the past.

    python tests/golden/make_golden.py tests/golden/history-2026-11-v1.jsonl
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack

from safeguards.core import codec
from safeguards.core.decide import decide
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    Event,
    Observation,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    Signal,
)
from safeguards.core.policy import parse_policy
from safeguards.core.state import AccountState, fold, initial_state

POLICY_FILE = "policy-default-2026.11.1.toml"


def as_v1(wire: dict[str, Any]) -> dict[str, Any]:
    """RequestObserved as schema v1 wrote it: no ``surface`` field."""
    if wire.get("t") == "RequestObserved":
        body = dict(wire["b"])
        body.pop("surface")
        return {**wire, "sv": 1, "b": body}
    return wire


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_signal_v1(signal: Signal) -> bytes:
    env = msgpack.unpackb(codec.encode_signal(signal))
    if env["o"] is not None:
        env["o"] = as_v1(env["o"])
    packed: bytes = msgpack.packb(env)
    return packed


def encode_event_v1(event: Event) -> bytes:
    packed: bytes = msgpack.packb(as_v1(codec.event_to_wire(event)))
    return packed


def state_json(state: AccountState) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(state).items()}


def scenario(account: str) -> list[tuple[datetime, Observation | None]]:
    t = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    steps: list[tuple[datetime, Observation | None]] = []
    for i in range(30):
        t += timedelta(minutes=7)
        req = f"{account}-req-{i}"
        steps.append((t, RequestObserved(req, "model-x", "proxy", 40 + i, 200 + i, 180 + 3 * i,
                                         f"{i:064x}", i % 2 == 0, "allow")))
        jail = 0.93 if i in (5, 9, 14, 15) else 0.05
        weapons = 0.95 if i == 22 else 0.01
        steps.append((t, ScoreRecorded(req, "prompt", f"{i + 1:064x}", 180 + 3 * i, "default",
                                       "2026.11.1", (("jailbreak", jail), ("weapons", weapons),
                                                     ("cyber", 0.3)))))
        if i == 12:
            steps.append((t + timedelta(days=3), None))  # a tick after L1's expiry
            t += timedelta(days=3)
    steps.append((t, AppealFiled("ap-1", account, "research use")))
    steps.append((t, AppealResolved("ap-1", "reviewer-2", "upheld", 3, "policy applies")))
    steps.append((t, OperatorActionTaken("oncall-1", "set_level", 4, None, "case 4411")))
    steps.append((t, OperatorActionTaken("oncall-1", "clear", None, None, "account verified")))
    return steps


def main(out: Path) -> None:
    if out.exists():
        sys.exit(f"{out} exists: golden files are never regenerated; write a new one")
    policy = parse_policy((Path(__file__).parent / POLICY_FILE).read_text())
    lines: list[dict[str, Any]] = []
    for account in ("golden-acct-1", "golden:acct.2"):
        state = initial_state(account, "eu")
        lines.append({"account": account, "region": "eu", "policy": POLICY_FILE})
        for n, (at, obs) in enumerate(scenario(account)):
            signal = Signal(f"{account}-sig-{n}", account, "eu", at, f"corr-{n // 2}", obs)
            events = decide(state, signal, policy, at)
            state = fold(state, events)
            lines.append({"now": at.isoformat(), "signal": b64(encode_signal_v1(signal)),
                          "events": [b64(encode_event_v1(e)) for e in events]})
        lines.append({"final_state": state_json(state)})
    out.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
