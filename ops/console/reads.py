"""What the console reads that the event store's port does not offer: account search, the
timeline plot's per-bucket figures and the region's health.

The plot is computed in the database from the stored columns (time, type, strike potential), a
few hundred buckets whatever the history's length: a score's maximum is its strike potential
and a throttled request's is 1 (``core.backtest.strike_potential``), so scores, strikes and
throttles per bucket need no event body decoded. The few events that say who decided what
(enforcement changes, operator actions, reviews, appeals) are read whole
(``select_events``). Nothing here writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from safeguards.core.errors import InvalidInput

MAX_SEARCH = 50

# Loose index scan over the primary key: the distinct account ids from ``prefix`` on, stopping
# at the first that does not start with it (so a short prefix never scans a whole region).
_SEARCH = sa.text("""
WITH RECURSIVE ids(id) AS (
  (SELECT account_id FROM events WHERE account_id >= :prefix ORDER BY account_id LIMIT 1)
  UNION ALL
  SELECT (SELECT e.account_id FROM events e WHERE e.account_id > ids.id
           ORDER BY e.account_id LIMIT 1)
    FROM ids WHERE ids.id IS NOT NULL AND starts_with(ids.id, :prefix)
)
SELECT id FROM ids WHERE id IS NOT NULL AND starts_with(id, :prefix) LIMIT :limit
""")

_BUCKETS = sa.text("""
WITH span AS (
  SELECT extract(epoch FROM min(occurred_at)) AS t0,
         extract(epoch FROM max(occurred_at)) AS t1
    FROM events WHERE account_id = :account
)
SELECT width_bucket(extract(epoch FROM e.occurred_at), span.t0, span.t1 + 0.001, :buckets) AS b,
       extract(epoch FROM max(e.occurred_at)) AS at,
       count(*) AS events,
       max(e.strike_potential) FILTER (WHERE e.type = 'ScoreRecorded') AS top_score,
       count(*) FILTER (WHERE e.type = 'RequestObserved') AS requests,
       count(*) FILTER (WHERE e.type = 'RequestObserved' AND e.strike_potential >= 1)
         AS throttled,
       count(*) FILTER (WHERE e.type = 'StrikeRecorded') AS strikes
  FROM events e, span
 WHERE e.account_id = :account
 GROUP BY b ORDER BY b
""")

_OUTBOX = sa.text("""
SELECT count(*), extract(epoch FROM now() - min(created_at))
  FROM outbox WHERE published_at IS NULL
""")
_HEAD = sa.text("""
SELECT max(position), extract(epoch FROM now() - max(occurred_at)), count(DISTINCT account_id)
  FROM (SELECT position, occurred_at, account_id FROM events
         ORDER BY region, position DESC LIMIT 1000) recent
""")
_REVIEWS = sa.text("SELECT count(DISTINCT account_id) FROM events WHERE type = 'ReviewRequested'")


def validate_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if len(prefix) > 200 or "\x00" in prefix:
        raise InvalidInput("a search is at most 200 characters")
    return prefix


async def search_accounts(engine: Any, prefix: str, limit: int = MAX_SEARCH) -> list[str]:
    """Account and aggregate ids (``org:``, ``key:``, ``prompt:``) that start with ``prefix``."""
    async with engine.connect() as conn:
        rows = await conn.execute(_SEARCH, {"prefix": validate_prefix(prefix), "limit": limit})
        return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class PlotBuckets:
    at: list[float]  # each bucket's newest event, unix seconds
    events: list[int]
    top_score: list[float | None]
    requests: list[int]
    throttled: list[int]
    strikes: list[int]


async def plot_buckets(engine: Any, account_id: str, buckets: int = 600) -> PlotBuckets:
    out = PlotBuckets([], [], [], [], [], [])
    async with engine.connect() as conn:
        for row in await conn.execute(_BUCKETS, {"account": account_id, "buckets": buckets}):
            out.at.append(float(row.at))
            out.events.append(int(row.events))
            out.top_score.append(None if row.top_score is None else round(row.top_score, 4))
            out.requests.append(int(row.requests))
            out.throttled.append(int(row.throttled))
            out.strikes.append(int(row.strikes))
    return out


@dataclass(slots=True)
class RegionHealth:
    measured_at: float
    outbox_pending: int = 0
    outbox_oldest_s: float | None = None  # enforcement lag: the oldest command not yet sent
    feed_position: int | None = None
    newest_event_age_s: float | None = None
    open_review_accounts: int = 0
    streams: dict[str, int] = field(default_factory=dict)  # stream -> messages
    stream_errors: list[str] = field(default_factory=list)
    gate: dict[str, float] = field(default_factory=dict)  # proxy metric samples
    gate_errors: list[str] = field(default_factory=list)


async def store_health(engine: Any, health: RegionHealth) -> None:
    async with engine.connect() as conn:
        pending, oldest = (await conn.execute(_OUTBOX)).one()
        health.outbox_pending = int(pending)
        health.outbox_oldest_s = None if oldest is None else float(oldest)
        position, age, _ = (await conn.execute(_HEAD)).one()
        health.feed_position = None if position is None else int(position)
        health.newest_event_age_s = None if age is None else float(age)
        health.open_review_accounts = int((await conn.execute(_REVIEWS)).scalar_one())


async def stream_health(nats_url: str | None, region: str, health: RegionHealth) -> None:
    """Messages held by the region's dead-letter, input and enforcement streams."""
    if not nats_url:
        health.stream_errors.append("no NATS configured")
        return
    import anyio

    from safeguards.core.subjects import stream_name
    from safeguards.ops.actions import operator_connection

    try:
        with anyio.fail_after(5):
            nc = await operator_connection(nats_url, region)
            try:
                js = nc.jetstream()
                for kind in ("DLQ", "INPUTS", "ENFORCE"):
                    info = await js.stream_info(stream_name(region, kind))
                    health.streams[kind.lower()] = int(info.state.messages)
            finally:
                await nc.close()
    except Exception as exc:  # a page of figures: say which could not be read, and why
        health.stream_errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")


GATE_SAMPLES = ("safeguards_csp_fallbacks_total", "safeguards_csp_decisions_total",
                "safeguards_csp_cache_staleness_seconds", "safeguards_csp_commands_total",
                "safeguards_csp_commands_rejected_total")


async def gate_health(metrics_urls: list[str], health: RegionHealth) -> None:
    """The region's inline adapters' fail-open/closed fallbacks, decisions and staleness, read
    from their Prometheus endpoints (summed over adapters; staleness: the worst)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        for url in metrics_urls:
            try:
                text = (await client.get(url)).raise_for_status().text
            except httpx.HTTPError as exc:
                health.gate_errors.append(f"{url}: {type(exc).__name__}")
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name not in GATE_SAMPLES:
                        continue
                    label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    key = f"{sample.name}{{{label}}}" if label else sample.name
                    if sample.name.endswith("staleness_seconds"):
                        health.gate[key] = max(health.gate.get(key, 0.0), sample.value)
                    else:
                        health.gate[key] = health.gate.get(key, 0.0) + sample.value


def new_health() -> RegionHealth:
    return RegionHealth(time.time())


def iso(at: datetime | None) -> str:
    return "" if at is None else at.isoformat().replace("+00:00", "Z")
