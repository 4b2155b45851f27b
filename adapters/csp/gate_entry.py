"""One account in the inline gate's cache: its enforcement command's decision and its GCRA
rate state (requests and tokens), with the carry-over of usage from one tier to another."""

from __future__ import annotations

import math
from datetime import datetime

from safeguards.adapters.csp.decision import Decision

RATE_WINDOW_S = 60.0  # GCRA burst tolerance: one minute's quota may be spent at once
# Probation ends after ``gate.probation_requests`` answered screenings, or after this many times
# as many taken in all (answered or not): an overloaded classifier cannot keep it going forever.
PROBATION_TRIES = 3


class CacheEntry:
    """One account in the cache: its command (if any) and its GCRA state."""

    __slots__ = ("expires", "level", "ok", "probation_tries", "req_interval", "req_tat",
                 "screened", "tok_interval", "tok_tat", "version")

    def __init__(self, level: int, version: int, expires: float, req_interval: float,
                 tok_interval: float, ok: Decision) -> None:
        self.level = level
        self.version = version
        self.expires = expires
        self.req_interval = req_interval
        self.tok_interval = tok_interval
        self.ok = ok
        self.req_tat = 0.0
        self.tok_tat = 0.0
        # an account without a command: its probation screenings answered, and taken in all
        self.screened = 0
        self.probation_tries = 0

    def start_probation(self, requests: int) -> bool:
        """Whether a screening starting now is on probation (counted as taken): fewer than
        ``requests`` answered (``screened``: the caller counts an answer) and fewer than
        ``PROBATION_TRIES * requests`` taken. One that missed its deadline uses none up."""
        if self.screened >= requests or self.probation_tries >= PROBATION_TRIES * requests:
            return False
        self.probation_tries += 1
        return True

    def take(self, now: float) -> tuple[str, float] | None:
        """Spend one request on the GCRA: None, or the throttle's reason and retry-after."""
        # The theoretical arrival time may run at most one window ahead.
        new_tat = (self.req_tat if self.req_tat > now else now) + self.req_interval
        if new_tat - now > RATE_WINDOW_S:
            return "rate_requests", new_tat - now - RATE_WINDOW_S
        # Tokens are charged after the response (observe); refuse while the account is in debt.
        if self.tok_tat - now > RATE_WINDOW_S:
            return "rate_tokens", self.tok_tat - now - RATE_WINDOW_S
        self.req_tat = new_tat
        return None


def interval(per_minute: int) -> float:
    return math.inf if per_minute <= 0 else 60.0 / per_minute


def carry_usage(old: CacheEntry, new: CacheEntry, now: float) -> None:
    """Move the requests and tokens spent in the current window from one tier's GCRA to another's.

    A TAT ahead of ``now`` by ``d`` seconds means ``d / interval`` units spent; the new TAT puts
    the same count at the new interval. An infinite interval (a tier of zero) spent nothing.
    """
    for tat_name, interval_name in (("req_tat", "req_interval"), ("tok_tat", "tok_interval")):
        ahead = getattr(old, tat_name) - now
        old_interval = getattr(old, interval_name)
        new_interval = getattr(new, interval_name)
        if ahead <= 0 or math.isinf(ahead) or math.isinf(old_interval):
            continue
        spent = ahead / old_interval
        setattr(new, tat_name, now + min(spent * new_interval, 2 * RATE_WINDOW_S))


def epoch(at: datetime | None) -> float:
    return math.inf if at is None else at.timestamp()
