"""The review queue, read from the events both stores keep.

An account's review is open from its latest ``ReviewRequested`` until an event the fold says
settles it (``core.state.settles_review``): an ``OperatorActionTaken`` that sets or clears the
level, or an ``ApprovalGranted``, which ``core.decide`` records only where a second operator's
approval carried out the action awaiting it. An ``approve`` itself settles nothing (one's own, or
of another level, changes nothing), nor does a note or a reject. A ``ReviewClaimed`` in between
says who took it. These are the fold's rules for ``AccountState.review_level``, applied to the
few events of those four types, so the queue is found without folding whole histories.

PostgreSQL finds the candidates through a partial index on just those types
(``events_review_queue_idx``): the accounts that ever had a review are read a page at a time,
and the events from each one's latest request on are decoded here. Both stores use
:func:`open_review`, so they cannot disagree on what is open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from safeguards.core.events import (
    ApprovalGranted,
    Event,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
)
from safeguards.core.ports import OpenReview
from safeguards.core.state import settles_review

REVIEW_TYPES = (ReviewRequested.TYPE, ReviewClaimed.TYPE, OperatorActionTaken.TYPE,
                ApprovalGranted.TYPE)

# One page of accounts that have a ReviewRequested, with their events of the review types from
# the latest request on. '' sorts before every account id (ids are at least one character).
_CANDIDATES = """
WITH latest AS (
  SELECT account_id, max(version) AS requested
    FROM events
   WHERE type = 'ReviewRequested' AND account_id > $1
   GROUP BY account_id
   ORDER BY account_id
   LIMIT $2
)
SELECT e.account_id, e.version, e.region, e.event_id, e.type, e.schema_version, e.occurred_at,
       e.causation_id, e.correlation_id, e.policy_version, e.body
  FROM latest l
  JOIN events e ON e.account_id = l.account_id AND e.version >= l.requested
 WHERE e.type IN ('ReviewRequested', 'ReviewClaimed', 'OperatorActionTaken', 'ApprovalGranted')
 ORDER BY e.account_id, e.version
"""


def open_review(events: Iterable[Event]) -> OpenReview | None:
    """The open review of one account, given its events of the review types in version order
    (any prefix before the latest request may be left out)."""
    review: OpenReview | None = None
    for e in events:
        body = e.body
        if isinstance(body, ReviewRequested):
            # A later request (a higher proposal) is a new question: it is claimed afresh.
            review = OpenReview(e.account_id, e.version, e.occurred_at, body.proposed_level,
                                body.rule_id, body.reason)
        elif review is None:
            continue
        elif isinstance(body, ReviewClaimed):
            review = OpenReview(review.account_id, review.version, review.requested_at,
                                review.proposed_level, review.rule_id, review.reason,
                                body.operator, e.occurred_at)
        elif settles_review(body):
            review = None
    return review


async def postgres_open_reviews(driver: Any, decode: Callable[[Any], Event], after: str | None,
                                limit: int, statement_timeout_s: float) -> list[OpenReview]:
    """``open_reviews`` on an asyncpg connection: pages of candidates until ``limit`` are open
    or none are left."""
    out: list[OpenReview] = []
    cursor = after or ""
    while len(out) < limit:
        rows = await driver.fetch(_CANDIDATES, cursor, limit, timeout=statement_timeout_s)
        by_account: dict[str, list[Event]] = {}
        for row in rows:
            by_account.setdefault(row[0], []).append(decode(row))
        for events in by_account.values():
            review = open_review(events)
            if review is not None:
                out.append(review)
        if len(by_account) < limit:
            break
        cursor = rows[-1][0]
    return out[:limit]
