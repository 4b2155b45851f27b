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
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

# Per FINE_EVENTS consecutive versions of one account, from ``after`` on: the interval's newest
# time, its events, its highest score (a score's strike potential), requests, throttled requests
# (strike potential 1) and strikes. Versions never change, so finished intervals are cached.
_FINE = sa.text("""
SELECT (version - 1) / :width AS b, extract(epoch FROM max(occurred_at))::float8 AS at,
       max(version) AS last, count(*) AS events,
       max(strike_potential) FILTER (WHERE type = 'ScoreRecorded') AS top_score,
       count(*) FILTER (WHERE type = 'RequestObserved') AS requests,
       count(*) FILTER (WHERE type = 'RequestObserved' AND strike_potential >= 1) AS throttled,
       count(*) FILTER (WHERE type = 'StrikeRecorded') AS strikes
  FROM events
 WHERE account_id = :account AND version > :after
 GROUP BY b ORDER BY b
""")
FINE_EVENTS = 64
PLOT_POINTS = 600
CACHED_ACCOUNTS = 256

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


# one interval: [newest time, events, top score (-1: none), requests, throttled, strikes]
_Fine = list[float]


def _merge(into: _Fine, row: _Fine) -> None:
    into[0] = max(into[0], row[0])
    into[2] = max(into[2], row[2])
    for i in (1, 3, 4, 5):
        into[i] += row[i]


class PlotCache:
    """Each recently viewed account's per-interval figures, up to the newest version read: a
    later view reads only the versions after it (an index range), so a long history's plot
    costs one full scan on its first view only. Holds figures, no ids but the accounts'."""

    def __init__(self, accounts: int = CACHED_ACCOUNTS) -> None:
        self._accounts = accounts
        self._held: OrderedDict[str, tuple[int, dict[int, _Fine]]] = OrderedDict()

    async def buckets(self, engine: Any, account_id: str) -> PlotBuckets:
        through, fine = self._held.pop(account_id, (0, {}))
        fine = dict(fine)
        async with engine.connect() as conn:
            # a long history's grouping fits in memory instead of sorting on disk
            await conn.execute(sa.text("SET LOCAL work_mem = '32MB'"))
            for r in await conn.execute(_FINE, {"account": account_id, "after": through,
                                                "width": FINE_EVENTS}):
                row = [float(r.at), float(r.events),
                       -1.0 if r.top_score is None else float(r.top_score),
                       float(r.requests), float(r.throttled), float(r.strikes)]
                if r.b in fine:
                    _merge(fine[r.b], row)
                else:
                    fine[r.b] = row
                through = max(through, int(r.last))
            await conn.rollback()
        self._held[account_id] = (through, fine)
        while len(self._held) > self._accounts:
            self._held.popitem(last=False)
        return _display(fine)


class MarkerCache:
    """Each recently viewed account's newest decisions and operator actions (``types``), up to
    the newest version read: a later view reads only what came after it."""

    def __init__(self, types: tuple[str, ...], keep: int,
                 accounts: int = CACHED_ACCOUNTS) -> None:
        self._types, self._keep, self._accounts = types, keep, accounts
        self._held: OrderedDict[str, tuple[int, list[Any]]] = OrderedDict()

    async def events(self, store: Any, account_id: str, version: int) -> list[Any]:
        """The newest ``keep`` events of the types, in version order, as of ``version`` (the
        account's current version, just read)."""
        through, held = self._held.pop(account_id, (0, []))
        if version > through:
            newer = await store.select_events(account_id, types=self._types,
                                              limit=self._keep, after=through)
            # what was appended after ``version`` is read again next time, not twice
            held = (held + [e for e in newer if e.version <= version])[-self._keep:]
            through = version
        self._held[account_id] = (through, held)
        while len(self._held) > self._accounts:
            self._held.popitem(last=False)
        return held


def _display(fine: dict[int, _Fine]) -> PlotBuckets:
    """At most PLOT_POINTS points: consecutive intervals merged."""
    out = PlotBuckets([], [], [], [], [], [])
    if not fine:
        return out
    keys = sorted(fine)
    per = -(-len(keys) // PLOT_POINTS)
    for i in range(0, len(keys), per):
        merged = list(fine[keys[i]])
        for k in keys[i + 1:i + per]:
            _merge(merged, fine[k])
        out.at.append(merged[0])
        out.events.append(int(merged[1]))
        out.top_score.append(None if merged[2] < 0 else round(merged[2], 4))
        out.requests.append(int(merged[3]))
        out.throttled.append(int(merged[4]))
        out.strikes.append(int(merged[5]))
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
    # durable fail-open/closed marks (the requests' RequestObserved.fallback, in the store):
    # (mode, cause) -> {"hour": n, "day": n}; the periods read only partly (FALLBACK_ROWS)
    fallbacks: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    fallbacks_partial: list[str] = field(default_factory=list)


FALLBACK_PERIODS = (("hour", 3600.0), ("day", 86400.0))
FALLBACK_ROWS = 10_000  # marked requests read per period; more is said, not read


async def fallback_health(engine: Any, region: str, health: RegionHealth) -> None:
    """Requests served or refused on a fail-open/closed fallback in the last hour and day, by
    mode and cause, from the marks the gate wrote into their signals (``ops timeline``'s query:
    ``postmortem.fallback_events``); unlike the adapters' counters they survive restarts and
    count every adapter of the region."""
    from safeguards.ops.postmortem import fallback_events, fallback_marks

    until = datetime.fromtimestamp(health.measured_at, UTC)
    async with engine.connect() as conn:
        db = (await conn.get_raw_connection()).driver_connection
        for period, seconds in FALLBACK_PERIODS:
            events, partial = await fallback_events(db, region, until - timedelta(seconds=seconds),
                                                    until, FALLBACK_ROWS)
            if partial:
                health.fallbacks_partial.append(period)
            for _, mode, cause in fallback_marks(events):
                counts = health.fallbacks.setdefault((mode, cause), {"hour": 0, "day": 0})
                counts[period] += 1
        await conn.rollback()


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
