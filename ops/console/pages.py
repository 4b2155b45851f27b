"""What each read page of the console shows, read from the region's store.

The timeline of a long history is a plot of per-interval figures computed in the database
(``reads.PlotCache``: a later view reads only the versions after the last one it read), the
events that decide or record a person's action read whole, and
the newest page of events; older pages come on demand, down to the first kept event of a
history retention truncated (then the page says what retention removed, when, and its base's
level and risk, and links nothing older: those events are gone). An explanation reads only
what the chain needs (the decision, its trigger, the strikes, links and forgiveness before it,
the scores the strikes came from) and hands them to ``ops.explain``, so the console and ``ops
explain`` say the same thing.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from safeguards.core.errors import InvalidInput
from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    AppealFiled,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
    StrikeRecorded,
)
from safeguards.core.ids import aggregate_kind
from safeguards.core.state import AccountState
from safeguards.ops.cli import render_state, timeline_row
from safeguards.ops.console.reads import MarkerCache, PlotCache
from safeguards.ops.explain import NotAnEnforcement, check_after_base, explain, render
from safeguards.ops.retention_note import retention_note

PAGE = 100
MARKERS = 2000
MARKER_TYPES = tuple(t.TYPE for t in (
    EnforcementChanged, OperatorActionTaken, ApprovalRequested, ApprovalGranted, ReviewRequested,
    ReviewClaimed, AppealFiled, AppealResolved, AccountLinked, AggregateEnforced, AccountErased,
    LinkedEpisode))
CHAIN_TYPES = tuple(t.TYPE for t in (StrikeRecorded, AccountLinked, OperatorActionTaken,
                                     AppealResolved, AccountErased))
MAX_LINKED = 20
MAX_MEMBERS = 200


def state_summary(state: AccountState, at: datetime | None = None) -> str:
    out = io.StringIO()
    render_state(state, at, out)
    return out.getvalue()


def _levels(markers: list[Event], at: list[float]) -> list[int]:
    """The enforcement level at the end of each bucket, from the enforcement changes."""
    changes = [(e.occurred_at.timestamp(), e.body.level, e.body.previous_level)
               for e in markers if isinstance(e.body, EnforcementChanged)]
    level = changes[0][2] if changes else 0
    out, i = [], 0
    for t in at:
        while i < len(changes) and changes[i][0] <= t:
            level = changes[i][1]
            i += 1
        out.append(level)
    return out


async def timeline(store: Any, account_id: str, plots: PlotCache,
                   marked: MarkerCache) -> dict[str, Any]:
    state: AccountState = await store.load(account_id)
    if state.version == 0:
        return {"state": state, "found": False}
    buckets = await plots.buckets(store.engine, account_id)
    markers: list[Event] = await marked.events(store, account_id, state.version)
    newest: list[Event] = await store.history(
        account_id, from_version=max(1, state.version - PAGE + 1))
    plot = {"at": buckets.at, "top_score": buckets.top_score, "strikes": buckets.strikes,
            "throttled": buckets.throttled, "requests": buckets.requests,
            "level": _levels(markers, buckets.at)}
    return {"state": state, "found": True, "summary": state_summary(state), "plot": plot,
            "markers": [row(e) for e in reversed(markers)], "markers_capped":
            len(markers) == MARKERS, "events": [row(e) for e in reversed(newest)],
            **await _older(store, account_id, newest[0].version if newest else None)}


def row(e: Event) -> dict[str, Any]:
    out = timeline_row(e)
    out["explainable"] = isinstance(e.body, EnforcementChanged)
    return out


async def older_events(store: Any, account_id: str, before: int) -> dict[str, Any]:
    if before < 1:
        raise InvalidInput("before must be a version >= 1")
    events: list[Event] = await store.history(account_id, from_version=max(1, before - PAGE + 1),
                                              to_version=before)
    older = await _older(store, account_id, events[0].version if events else before + 1)
    if not events and older["retention"] is None:
        older["older"] = None  # nothing there, and nothing retention removed: nothing older
    return {"events": [row(e) for e in reversed(events)], **older}


async def _older(store: Any, account_id: str, first: int | None) -> dict[str, Any]:
    """What a page whose oldest event is ``first`` offers below it: the version the next older
    page ends at (``older``), or, where retention removed every version before ``first``, what
    it removed, when, and its base's level and risk (``retention``); neither at version 1."""
    if first is None or first <= 1:
        return {"older": None, "retention": None}
    note = await retention_note(store, account_id)
    if note is not None and first <= note.first_kept:
        return {"older": None, "retention": note}
    return {"older": first - 1, "retention": None}


def parse_at(text: str) -> int | datetime:
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"not a version or an ISO time: {text[:40]!r}") from None
    if at.tzinfo is None:
        raise InvalidInput("a time needs a zone (Z or +00:00)")
    return at


async def state_at(store: Any, account_id: str, at_text: str) -> str:
    at = parse_at(at_text)
    if isinstance(at, int):
        state = await store.state_at(account_id, version=at)
        return state_summary(state)
    return state_summary(await store.state_at(account_id, at=at), at)


async def explanation(store: Any, account_id: str, version: int) -> str:
    """``ops explain``'s text for one enforcement change, from the events its chain needs (and,
    where retention truncated the history, its retention base)."""
    from safeguards.adapters.store.retention_base import base_state

    base = await base_state(store, account_id)
    check_after_base(account_id, version, base)
    target: list[Event] = await store.select_events(account_id, versions=[version])
    if not target or not isinstance(target[0].body, EnforcementChanged):
        raise NotAnEnforcement(f"version {version} is "
                               f"{target[0].type if target else 'missing'}, "
                               "not an EnforcementChanged")
    chain: list[Event] = await store.select_events(account_id, types=CHAIN_TYPES, limit=20_000)
    wanted = [e for e in chain if e.version < version or isinstance(e.body, AccountErased)]
    refs = {target[0].body.caused_by_version} | {
        e.body.caused_by_version for e in wanted if isinstance(e.body, StrikeRecorded)}
    refs.discard(0)
    extra: list[Event] = await store.select_events(account_id, versions=sorted(refs),
                                                   limit=20_000) if refs else []
    history = sorted({e.version: e for e in [*wanted, *extra, *target]}.values(),
                     key=lambda e: e.version)
    return render(explain(history, version, base))


async def linked(store: Any, account_id: str) -> dict[str, Any]:
    """The aggregates the account is linked to, with their levels and members; for an
    aggregate itself, its members."""
    links: list[Event] = await store.select_events(
        account_id, types=(AccountLinked.TYPE, AggregateEnforced.TYPE), limit=500)
    aggregates: dict[str, dict[str, Any]] = {}
    for e in links:
        body = e.body
        if isinstance(body, AccountLinked):
            aggregates.setdefault(body.aggregate, {"link": body.link, "version": e.version,
                                                   "at": e.occurred_at, "members": []})
    names = list(aggregates)[:MAX_LINKED]
    if aggregate_kind(account_id) is not None:
        names.insert(0, account_id)
        aggregates[account_id] = {"link": "this aggregate", "version": 0, "at": None,
                                  "members": []}
    everyone: set[str] = set(names)
    for name in names:
        members: list[Event] = await store.select_events(name, types=(MemberLinked.TYPE,),
                                                         limit=MAX_MEMBERS)
        found = [e.body.member_account for e in members if isinstance(e.body, MemberLinked)]
        aggregates[name]["members"] = sorted(set(found))
        everyone.update(found)
    states: dict[str, AccountState] = await store.load_many(sorted(everyone))
    return {"aggregates": [(n, aggregates[n]) for n in names],
            "levels": {a: s.level for a, s in states.items()},
            "capped": len(aggregates) > MAX_LINKED}
