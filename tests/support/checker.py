"""The end-to-end checker: is every input accounted for exactly once, every change emitted?

Given the signals that were published, it reads the region's event store and enforcement stream
and reports inputs lost (no inbox key, or no observation event), double-applied (an observation
recorded more than once), enforcement changes whose command never reached the enforcement stream
or was never confirmed, and accounts whose last enforcement command is not their latest change.
Fault tests and the benchmark use it; an operator can run it after an incident.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import nats.errors
import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from safeguards.adapters.store import PostgresEventStore
from safeguards.core.codec import decode_command
from safeguards.core.events import EnforcementChanged, ScoreRecorded, Signal
from safeguards.core.ids import derive_id
from safeguards.core.ports import EventStore
from safeguards.core.subjects import enforce_subject, stream_name


@dataclass(slots=True)
class CheckReport:
    inputs: int = 0
    accounted: int = 0
    lost: list[str] = field(default_factory=list)
    double_applied: list[str] = field(default_factory=list)
    enforcement_changes: int = 0
    commands_unconfirmed: list[str] = field(default_factory=list)  # outbox rows still pending
    commands_not_received: list[str] = field(default_factory=list)  # never seen by a subscriber
    stale_last_value: list[str] = field(default_factory=list)  # accounts whose last cmd lags

    @property
    def ok(self) -> bool:
        return not (self.lost or self.double_applied or self.commands_unconfirmed
                    or self.commands_not_received or self.stale_last_value)

    def summary(self) -> dict[str, int]:
        return {
            "inputs": self.inputs, "accounted": self.accounted, "lost": len(self.lost),
            "double_applied": len(self.double_applied),
            "enforcement_changes": self.enforcement_changes,
            "commands_unconfirmed": len(self.commands_unconfirmed),
            "commands_not_received": len(self.commands_not_received),
            "stale_last_value": len(self.stale_last_value),
        }


async def check_end_to_end(store: EventStore, js: JetStreamContext, region: str,
                           signals: Sequence[Signal],
                           received_command_ids: Iterable[str] | None = None) -> CheckReport:
    report = CheckReport(inputs=len(signals))
    by_account: dict[str, list[Signal]] = defaultdict(list)
    for s in signals:
        by_account[s.account_id].append(s)
    expected_commands: dict[str, str] = {}  # command id -> account
    latest_change: dict[str, int] = {}
    in_inbox = await inbox_keys_present(store, [s.signal_id for s in signals])
    for account, sigs in by_account.items():
        with anyio.fail_after(30):
            events = await store.history(account)
        recorded: dict[str, int] = defaultdict(int)
        for e in events:
            if getattr(e.body, "OBSERVATION", False):
                recorded[e.causation_id] += 1
            if isinstance(e.body, EnforcementChanged):
                report.enforcement_changes += 1
                expected_commands[derive_id("enforce", account, str(e.version))] = account
                latest_change[account] = e.version
        for s in sigs:
            n = recorded.get(s.signal_id, 0)
            if s.observation is None:
                n = 1 if s.signal_id in in_inbox else 0
            elif n and s.signal_id not in in_inbox:
                n = 0
            if n == 0:
                report.lost.append(s.signal_id)
            elif n > 1:
                report.double_applied.append(s.signal_id)
            else:
                report.accounted += 1
    pending = await store.pending_outbox(100_000)
    report.commands_unconfirmed = [p.message.message_id for p in pending]
    if received_command_ids is not None:
        seen = set(received_command_ids)
        report.commands_not_received = sorted(set(expected_commands) - seen)
    for account, version in latest_change.items():
        try:
            with anyio.fail_after(5):
                msg = await js.get_last_msg(stream_name(region, "ENFORCE"),
                                            enforce_subject(region, account))
        except (NotFoundError, nats.errors.Error, TimeoutError):
            report.stale_last_value.append(account)
            continue
        assert msg.data is not None
        if decode_command(msg.data).version != version:
            report.stale_last_value.append(account)
    return report


async def inbox_keys_present(store: EventStore, keys: Sequence[str]) -> set[str]:
    """The keys the store's inbox holds. On PostgreSQL one query per 10,000 keys reads the same
    table ``inbox_contains`` does (a fault run checks thousands of signals, again each second
    until they agree, and a statement per key cost seconds a pass); other stores are asked key
    by key through the port."""
    if not isinstance(store, PostgresEventStore):
        return {k for k in keys if await store.inbox_contains(k)}
    q = sa.text("SELECT inbox_key FROM inbox WHERE inbox_key = ANY(:keys)")
    found: set[str] = set()
    async with store.engine.connect() as conn:
        for i in range(0, len(keys), 10_000):
            with anyio.fail_after(30):
                rows = await conn.execute(q, {"keys": list(keys[i:i + 10_000])})
            found.update(r[0] for r in rows)
        await conn.rollback()
    return found


def score_signal(region: str, account_id: str, signal_id: str, at: datetime,
                 scores: tuple[tuple[str, float], ...], *, request_id: str | None = None
                 ) -> Signal:
    """A classifier score for one piece of content (a weapons score >= 0.9 escalates to L3)."""
    rid = request_id or signal_id
    return Signal(
        signal_id=signal_id, account_id=account_id, region=region, occurred_at=at,
        correlation_id=rid,
        observation=ScoreRecorded(
            # each signal stands for distinct content (the same hash would be one piece of
            # evidence, struck once)
            request_id=rid, content_kind="prompt",
            content_sha256=hashlib.sha256(signal_id.encode()).hexdigest(), content_chars=100,
            model_name="bench-classifier", model_version="1", scores=scores,
        ),
    )
