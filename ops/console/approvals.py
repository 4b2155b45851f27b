"""What the console's pending-approvals and appeals pages read, and the check an approval passes
before the console sends it.

An action that takes two people (``core.operators.needs_second_operator``) is recorded as an
``ApprovalRequested`` and held in the account's state (``AccountState.pending_approval``) until
an approval carries it out, another action supersedes it, or it lapses after
``APPROVAL_WINDOW_S``. An appeal is open from its ``AppealFiled`` until an ``AppealResolved``
names its id (``AccountState.open_appeals``). The candidates are found in the database (accounts
with such an event: for approvals, only within the window), a page at a time, and the account's
folded state says which are still open, so the pages say what the actors decide on.

Reasons and who filed an appeal are sealed personal fields (``core.erasure``): the store returns
them as the timeline shows them (``[erased]`` once the account is erased).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from safeguards.core.events import AppealFiled, Event
from safeguards.core.operators import APPROVAL_WINDOW_S
from safeguards.core.state import AccountState, PendingApproval

PAGE = 200
MAX_ROWS = 200
MAX_APPEAL_EVENTS = 500

# One page of accounts (after a cursor) with a request for approval since a time, or an appeal.
_APPROVAL_ACCOUNTS = sa.text("""
SELECT DISTINCT account_id FROM events
 WHERE type = 'ApprovalRequested' AND occurred_at >= :since AND account_id > :after
 ORDER BY account_id LIMIT :limit
""")
_APPEAL_ACCOUNTS = sa.text("""
SELECT DISTINCT account_id FROM events
 WHERE type = 'AppealFiled' AND account_id > :after
 ORDER BY account_id LIMIT :limit
""")


@dataclass(frozen=True, slots=True)
class AwaitingApproval:
    account_id: str
    level: int  # the account's level now
    pending: PendingApproval
    lapses_at: datetime


@dataclass(frozen=True, slots=True)
class OpenAppeal:
    account_id: str
    level: int
    appeal_id: str
    filed_at: datetime | None
    filed_by: str
    reason: str
    version: int  # of the AppealFiled (0: not found among the newest)


def lapses_at(pending: PendingApproval) -> datetime:
    return pending.requested_at + timedelta(seconds=APPROVAL_WINDOW_S)


def awaiting(state: AccountState, now: datetime) -> PendingApproval | None:
    """The account's action awaiting a second operator, unless it has lapsed."""
    pending = state.pending_approval
    return None if pending is None or lapses_at(pending) < now else pending


class ApprovalProblem(Exception):
    """Why an approval would change nothing; ``own``: the approver proposed the action."""

    def __init__(self, message: str, *, own: bool = False) -> None:
        super().__init__(message)
        self.own = own


def check_approval(state: AccountState, operator: str, level: int | None,
                   now: datetime) -> None:
    """Raises ``ApprovalProblem`` unless ``operator``'s approval of ``level`` carries out the
    action awaiting approval (the actor's rule, ``core.decide._approve``, checked first here so
    that the console can refuse and say why rather than send an approval that does nothing)."""
    pending = awaiting(state, now)
    if pending is None:
        raise ApprovalProblem(f"no action awaits approval on {state.account_id} (approved, "
                              "superseded or lapsed): reload the page")
    if pending.operator == operator:
        raise ApprovalProblem(f"{operator} proposed this action: a second admin must approve "
                              "it", own=True)
    if level != pending.level:
        raise ApprovalProblem(f"the action awaiting approval targets L{pending.level}, not "
                              f"L{level}: reload the page")


def check_rejection(state: AccountState, level: int | None, now: datetime) -> None:
    """Raises ``ApprovalProblem`` unless a rejection of ``level`` drops the action awaiting
    approval (any admin may reject it, its proposer too: a withdrawal)."""
    pending = awaiting(state, now)
    if pending is None:
        raise ApprovalProblem(f"no action awaits approval on {state.account_id} (approved, "
                              "superseded or lapsed): reload the page")
    if level != pending.level:
        raise ApprovalProblem(f"the action awaiting approval targets L{pending.level}, not "
                              f"L{level}: reload the page")


async def _accounts(engine: Any, query: Any, params: dict[str, Any], after: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(query, {**params, "after": after, "limit": PAGE})
        found = [r[0] for r in rows]
        await conn.rollback()
    return found


async def pending_approvals(store: Any, now: datetime,
                            limit: int = MAX_ROWS) -> list[AwaitingApproval]:
    """The region's actions awaiting a second operator, by account."""
    since = now - timedelta(seconds=APPROVAL_WINDOW_S)
    out: list[AwaitingApproval] = []
    after = ""
    while len(out) < limit:
        ids = await _accounts(store.engine, _APPROVAL_ACCOUNTS, {"since": since}, after)
        states: dict[str, AccountState] = await store.load_many(ids)
        for account in ids:
            pending = awaiting(states[account], now)
            if pending is not None:
                out.append(AwaitingApproval(account, states[account].level, pending,
                                            lapses_at(pending)))
        if len(ids) < PAGE:
            break
        after = ids[-1]
    return out[:limit]


async def open_appeals(store: Any, limit: int = MAX_ROWS) -> list[OpenAppeal]:
    """The region's appeals not yet resolved, each with who filed it, when and why."""
    out: list[OpenAppeal] = []
    after = ""
    while len(out) < limit:
        ids = await _accounts(store.engine, _APPEAL_ACCOUNTS, {}, after)
        states: dict[str, AccountState] = await store.load_many(ids)
        for account in ids:
            state = states[account]
            if not state.open_appeals:
                continue
            filed: list[Event] = await store.select_events(
                account, types=(AppealFiled.TYPE,), limit=MAX_APPEAL_EVENTS)
            by_id = {e.body.appeal_id: e for e in filed if isinstance(e.body, AppealFiled)}
            for appeal_id in state.open_appeals:
                e = by_id.get(appeal_id)
                body = e.body if e is not None and isinstance(e.body, AppealFiled) else None
                out.append(OpenAppeal(account, state.level, appeal_id,
                                      e.occurred_at if e is not None else None,
                                      body.filed_by if body else "?",
                                      body.reason if body else "?",
                                      e.version if e is not None else 0))
        if len(ids) < PAGE:
            break
        after = ids[-1]
    return out[:limit]
