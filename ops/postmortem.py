"""``ops timeline``: a region's incidents in a window, read from its durable records.

- **Fail-open and fail-closed**: the gate marks every request it served or refused on a fallback
  (``RequestObserved.fallback``, ``<mode>:<cause>``), and that signal is stored in the account's
  history like every request. A window is a run of such requests of one mode with no gap over
  ``WINDOW_GAP``: it starts at the first and ends at the last.
- **Enforcement lag**: each enforcement command's outbox row (``created_at`` when the decision
  committed, ``published_at`` when the relay sent it; still unsent: lagging until the window's
  end). Published rows are kept ``outbox_ttl_s`` (7 days by default, each subject's newest longer).
- **Enforcement changes by rule**, and **operator actions**: the region's events of those types.
- **Dead letters**: the region's dead-letter stream (reason, error class, source; never the
  payload), read by sequence (``dead_letters``).

Nothing here reads a body's personal fields (operators' reasons, organisation ids, prompt
hashes): they are sealed and read as erased; the report names accounts, rules, operators and
counts only. Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from safeguards.adapters.store.pg_reads import event_from_row
from safeguards.core.errors import InvalidInput
from safeguards.core.events import (
    AccountErased,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    OperatorActionTaken,
    RequestObserved,
    ReviewClaimed,
)

MAX_WINDOW = timedelta(days=31)
BUCKETS = 96
WINDOW_GAP = timedelta(minutes=5)
MAX_ROWS = 100_000  # decoded rows per kind; more is said, not read
LISTED = 500  # operator actions and dead letters listed one by one

OPERATOR_TYPES = ("OperatorActionTaken", "ApprovalRequested", "ApprovalGranted",
                  "AppealResolved", "ReviewClaimed", "AccountErased")
_KEY = b"\xa8fallback"  # msgpack: the field's name; followed by nil where none was recorded


class InvalidWindow(InvalidInput):
    """A window that does not parse, ends before it starts, or is longer than MAX_WINDOW."""


class UnknownRegion(InvalidInput):
    """A region with no operator registry here: nobody may read it."""


class NotPermitted(InvalidInput):
    """The reader is not an analyst or admin of the region."""


_RELATIVE = re.compile(r"-(\d{1,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, ``now``, or ``-N`` s/m/h/d before ``now``."""
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - timedelta(seconds=int(relative[1]) * _UNITS[relative[2]])
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InvalidWindow(f"not an ISO 8601 time or -N[smhd]: {text[:40]!r}") from None
    if at.tzinfo is None:
        raise InvalidWindow(f"time {text!r} has no zone: add Z or +00:00")
    return at.astimezone(UTC)


def check_window(since: datetime, until: datetime) -> None:
    if until <= since:
        raise InvalidWindow(f"--until ({since.isoformat()} .. {until.isoformat()}) must be "
                            "after --since")
    if until - since > MAX_WINDOW:
        raise InvalidWindow(f"a window is at most {MAX_WINDOW.days} days; this one is "
                            f"{(until - since).total_seconds() / 86400:.1f}")


def check_reader(region: str, operator: str) -> str:
    """The reader's role: an analyst's or an admin's, registered in the region."""
    from safeguards.adapters.operators import OperatorRegistry, registry_path

    if not registry_path(region).exists():
        raise UnknownRegion(f"unknown region {region!r}: no operator registry for it here")
    role = OperatorRegistry(region).role(operator)
    if role is None:
        raise NotPermitted(f"{operator} is not a registered operator of {region}")
    if role not in ("analyst", "admin"):
        raise NotPermitted(f"a region's postmortem takes an analyst or admin; {operator} is "
                           f"{role}")
    return role


@dataclass(slots=True)
class FallbackWindow:
    mode: str  # open, closed
    start: datetime
    end: datetime
    requests: int = 0
    accounts: set[str] = field(default_factory=set)
    causes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class RuleMoves:
    changes: int = 0
    accounts: set[str] = field(default_factory=set)
    to_level: dict[int, set[str]] = field(default_factory=dict)  # level -> accounts
    per_bucket: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OperatorRow:
    at: datetime
    account: str
    kind: str
    operator: str
    what: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    at: datetime
    source: str
    reason: str
    error: str


@dataclass(slots=True)
class Postmortem:
    region: str
    since: datetime
    until: datetime
    bucket_s: float
    requests: list[int] = field(default_factory=list)
    fail_open: list[int] = field(default_factory=list)
    fail_closed: list[int] = field(default_factory=list)
    windows: list[FallbackWindow] = field(default_factory=list)
    fallbacks_truncated: bool = False
    rules: dict[str, RuleMoves] = field(default_factory=dict)
    decisions_truncated: bool = False  # more enforcement changes and actions than MAX_ROWS
    lag_max_s: list[float | None] = field(default_factory=list)
    commands: int = 0
    unsent: int = 0
    operators: list[OperatorRow] = field(default_factory=list)
    operator_counts: dict[str, int] = field(default_factory=dict)  # operator -> actions
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letter_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_per_bucket: list[int] = field(default_factory=list)
    dead_letter_problem: str = ""  # why dead letters could not be read, if they could not

    def bucket(self, at: datetime) -> int:
        i = int((at - self.since).total_seconds() // self.bucket_s)
        return min(max(i, 0), BUCKETS - 1)

    @property
    def lag_worst_s(self) -> float | None:
        seen = [v for v in self.lag_max_s if v is not None]
        return max(seen) if seen else None


def new_postmortem(region: str, since: datetime, until: datetime) -> Postmortem:
    pm = Postmortem(region, since, until, (until - since).total_seconds() / BUCKETS)
    pm.requests, pm.fail_open, pm.fail_closed = [0] * BUCKETS, [0] * BUCKETS, [0] * BUCKETS
    pm.lag_max_s, pm.dead_per_bucket = [None] * BUCKETS, [0] * BUCKETS
    return pm


_COLUMNS = ("account_id, version, region, event_id, type, schema_version, occurred_at, "
            "causation_id, correlation_id, policy_version, body")
_REQUESTS = """
SELECT least(floor(extract(epoch FROM occurred_at - $2)::float8 / $4::float8)::int,
             $5::int - 1), count(*)
  FROM events WHERE region = $1 AND type = 'RequestObserved'
   AND occurred_at >= $2 AND occurred_at <= $3 GROUP BY 1
"""
_FALLBACKS = f"""
SELECT {_COLUMNS} FROM events
 WHERE region = $1 AND type = 'RequestObserved' AND occurred_at >= $2 AND occurred_at <= $3
   AND position($4::bytea IN body) > 0 AND position($5::bytea IN body) = 0
 ORDER BY occurred_at LIMIT $6
"""
_OF_TYPES = f"""
SELECT {_COLUMNS} FROM events
 WHERE region = $1 AND type = ANY($2::text[]) AND occurred_at >= $3 AND occurred_at <= $4
 ORDER BY occurred_at LIMIT $5
"""
_LAG = """
SELECT least(floor(extract(epoch FROM created_at - $1)::float8 / $3::float8)::int,
             $4::int - 1),
       count(*), count(*) FILTER (WHERE published_at IS NULL OR published_at > $2),
       max(extract(epoch FROM least(coalesce(published_at, $2), $2) - created_at))::float8
  FROM outbox WHERE created_at >= $1 AND created_at <= $2 GROUP BY 1
"""


async def read_store(store: Any, pm: Postmortem) -> None:
    """Requests, fallbacks, enforcement changes, operator actions and lag, from the store."""
    async with store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        db = raw.driver_connection
        window = (pm.region, pm.since, pm.until)
        for b, n in await db.fetch(_REQUESTS, *window, pm.bucket_s, BUCKETS):
            pm.requests[b] += n
        events, pm.fallbacks_truncated = await fallback_events(db, *window)
        _fallbacks(pm, events)
        rows = await db.fetch(_OF_TYPES, pm.region, ["EnforcementChanged", *OPERATOR_TYPES],
                              pm.since, pm.until, MAX_ROWS)
        pm.decisions_truncated = len(rows) == MAX_ROWS
        for event in (event_from_row(r) for r in rows):
            _decision(pm, event)
        for b, commands, unsent, lag in await db.fetch(_LAG, pm.since, pm.until, pm.bucket_s,
                                                       BUCKETS):
            pm.commands += commands
            pm.unsent += unsent
            if lag is not None:
                pm.lag_max_s[b] = max(pm.lag_max_s[b] or 0.0, float(lag))
        await conn.rollback()


async def fallback_events(db: Any, region: str, since: datetime, until: datetime,
                          limit: int = MAX_ROWS) -> tuple[list[Event], bool]:
    """The region's requests in [since, until] that carry a fallback mark, oldest first (at
    most ``limit``; True: that many were read, there may be more). ``db``: an asyncpg
    connection. The console's health page counts them too (``fallback_marks``)."""
    rows = await db.fetch(_FALLBACKS, region, since, until, _KEY, _KEY + b"\xc0", limit)
    return [event_from_row(r) for r in rows], len(rows) == limit


def fallback_marks(events: list[Event]) -> Iterator[tuple[Event, str, str]]:
    """(event, mode, cause) of each request served or refused on a fallback: its decoded body
    decides (the query's byte prefilter may let a false positive through)."""
    for e in events:
        body = e.body
        if not isinstance(body, RequestObserved) or not body.fallback:
            continue
        mode, _, cause = body.fallback.partition(":")
        if mode in ("open", "closed"):
            yield e, mode, cause


def _fallbacks(pm: Postmortem, events: list[Event]) -> None:
    open_now: dict[str, FallbackWindow] = {}
    for e, mode, cause in fallback_marks(events):
        (pm.fail_open if mode == "open" else pm.fail_closed)[pm.bucket(e.occurred_at)] += 1
        current = open_now.get(mode)
        if current is None or e.occurred_at - current.end > WINDOW_GAP:
            current = FallbackWindow(mode, e.occurred_at, e.occurred_at)
            open_now[mode] = current
            pm.windows.append(current)
        current.end = e.occurred_at
        current.requests += 1
        current.accounts.add(e.account_id)
        current.causes[cause] = current.causes.get(cause, 0) + 1


def _decision(pm: Postmortem, e: Event) -> None:
    body = e.body
    if isinstance(body, EnforcementChanged):
        moves = pm.rules.get(body.rule_id)
        if moves is None:
            moves = pm.rules[body.rule_id] = RuleMoves(per_bucket=[0] * BUCKETS)
        moves.changes += 1
        moves.accounts.add(e.account_id)
        moves.to_level.setdefault(body.level, set()).add(e.account_id)
        moves.per_bucket[pm.bucket(e.occurred_at)] += 1
        return
    row = _operator_row(e)
    if row is not None:
        pm.operator_counts[row.operator] = pm.operator_counts.get(row.operator, 0) + 1
        if len(pm.operators) < LISTED:
            pm.operators.append(row)


def _operator_row(e: Event) -> OperatorRow | None:
    b = e.body
    if isinstance(b, OperatorActionTaken):
        level = f" to L{b.level}" if b.action == "set_level" else ""
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.operator, b.action + level)
    if isinstance(b, ApprovalRequested):
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.operator,
                           f"asked {b.action} to L{b.level}")
    if isinstance(b, ApprovalGranted):
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.approver,
                           f"approved {b.operator}'s {b.action} to L{b.level}")
    if isinstance(b, AppealResolved):
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.operator,
                           f"appeal {b.outcome}, L{b.level_after}")
    if isinstance(b, ReviewClaimed):
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.operator, "claimed a review")
    if isinstance(b, AccountErased):
        return OperatorRow(e.occurred_at, e.account_id, e.type, b.operator,
                           f"erased v1..v{b.erased_through}")
    return None


async def read_dead_letters(nats_url: str | None, pm: Postmortem, *,
                            timeout_s: float = 30.0) -> None:
    """The dead letters stored in the window, from the region's dead-letter stream: its first
    message at or after ``since`` found by bisecting sequences, then read in order (headers
    only: a payload is never decoded). A stream that cannot be read is said, not skipped."""
    import anyio
    from nats.js.errors import NotFoundError

    from safeguards.adapters.bus.dlq import H_ERROR, H_REASON
    from safeguards.core.subjects import stream_name
    from safeguards.ops.actions import operator_connection

    if not nats_url:
        pm.dead_letter_problem = "not read: no NATS given (--nats or $SAFEGUARDS_NATS_URL)"
        return
    stream = stream_name(pm.region, "DLQ")
    with anyio.fail_after(timeout_s):
        nc = await operator_connection(nats_url, pm.region)
        try:
            js = nc.jetstream()
            state = (await js.stream_info(stream)).state
            lo, hi = int(state.first_seq), int(state.last_seq)
            if state.messages == 0:
                return

            async def at(seq: int) -> Any:
                try:
                    return await js.get_msg(stream, seq)
                except NotFoundError:  # removed meanwhile (aged out): read as absent
                    return None

            first, last = lo, hi + 1
            while first < last:  # the first sequence stored at or after since
                mid = (first + last) // 2
                msg = await at(mid)
                if msg is not None and msg.time is not None and msg.time < pm.since:
                    first = mid + 1
                else:
                    last = mid
            read = 0
            for seq in range(first, hi + 1):
                msg = await at(seq)
                if msg is None or msg.time is None:
                    continue
                if msg.time > pm.until or read >= MAX_ROWS:
                    break
                read += 1
                headers = msg.headers or {}
                source = (msg.subject or "").rsplit(".", 1)[-1]
                letter = DeadLetter(msg.time, source, str(headers.get(H_REASON, "")),
                                    str(headers.get(H_ERROR, "")))
                key = (letter.source, letter.reason)
                pm.dead_letter_counts[key] = pm.dead_letter_counts.get(key, 0) + 1
                pm.dead_per_bucket[pm.bucket(letter.at)] += 1
                if len(pm.dead_letters) < LISTED:
                    pm.dead_letters.append(letter)
        finally:
            await nc.close()
