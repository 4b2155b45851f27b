"""Event and request factories for the event store's tests and benchmarks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore
from safeguards.core.codec import encode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import (
    EnforcementChanged,
    Event,
    EventBody,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    StrikeRecorded,
)
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.subjects import enforce_subject

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SNAPSHOT_EVERY = 5  # small, so that the contract suite crosses snapshot boundaries often

StoreUnderTest = InMemoryEventStore | PostgresEventStore


async def create_database(admin_url: str) -> str:
    """A new empty database on the server ``admin_url`` points at; returns its URL."""
    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def unique_region() -> str:
    return "t" + uuid.uuid4().hex[:8]


def body_for(version: int, level: int = 0) -> EventBody:
    """A rotating mix of event bodies, deterministic in ``version``."""
    kind = version % 5
    if kind == 0:
        return EnforcementChanged(level=min(level + 1, 5), previous_level=level, expires_at=None,
                                  reason="risk over threshold", rule_id="ladder.l1",
                                  risk_total=1.5, caused_by_version=version - 1)
    if kind == 1:
        return RequestObserved(request_id=f"r{version}", model="m", surface="proxy",
                               input_tokens=10, output_tokens=20, prompt_chars=30,
                               prompt_sha256="0" * 64, streamed=False, action="allow")
    if kind == 2:
        return ScoreRecorded(request_id=f"r{version}", content_kind="prompt",
                             content_sha256="1" * 64, content_chars=30, model_name="clf",
                             model_version="1", scores=(("cyber", 0.9),))
    if kind == 3:
        return StrikeRecorded(category="cyber", score=0.9, points=1.0, total_after=1.0,
                              half_life_s=3600.0, rule_id="cyber.strike", request_id=f"r{version}",
                              model_name="clf", model_version="1", caused_by_version=version - 1)
    return OperatorActionTaken(operator="op", action="note", level=None, expires_at=None,
                               reason="looked at it")


def make_event(account: str, region: str, version: int, *, at: datetime | None = None,
               tag: str = "", body: EventBody | None = None) -> Event:
    return Event(
        event_id=f"{account}/{version}{tag}",
        account_id=account,
        region=region,
        version=version,
        occurred_at=at if at is not None else T0 + timedelta(seconds=version),
        causation_id=f"cause-{version}",
        correlation_id="corr",
        policy_version="2026.11.1" if version % 5 == 0 else None,
        body=body if body is not None else body_for(version),
    )


def make_request(account: str, region: str, expected: int, count: int = 1, *,
                 inbox_key: str | None = None, outbox: int = 0, tag: str = "",
                 at: datetime | None = None) -> AppendRequest:
    events = tuple(make_event(account, region, expected + 1 + i, tag=tag, at=at)
                   for i in range(count))
    messages = tuple(OutboxMessage(f"msg-{account}-{expected}-{j}{tag}",
                                   f"sg.{region}.enforce.{account}",
                                   b"\x81\xa1v\x01") for j in range(outbox))
    return AppendRequest(account, expected, events, inbox_key, messages)


def outbox_command(region: str, account: str, version: int) -> OutboxMessage:
    """An account's enforcement command (level 1, version ``version``) as an outbox message."""
    c = EnforcementCommand(
        command_id=f"cmd-{account}-{version}", account_id=account, region=region, level=1,
        requests_per_minute=600, tokens_per_minute=2_000_000, interventions=("annotate",),
        expires_at=None, version=version, policy_version="p", reason="test",
        issued_at=datetime(2026, 12, 1, tzinfo=UTC))
    return OutboxMessage(c.command_id, enforce_subject(region, account), encode_command(c))
