"""``safeguards ops queue list | claim | decide``: accounts waiting for a person.

    safeguards ops queue list --region eu [--after ACCOUNT] [--limit N] [--json]
    safeguards ops queue claim ACCOUNT --region eu --operator alice [--reason "on it"]
    safeguards ops queue decide ACCOUNT --region eu --level 4 --operator alice --reason "case 4411"

Automatic escalation stops at the policy's ``automatic_max_level``; past it the account records a
``ReviewRequested`` and waits here. ``list`` reads the region's store (databases as for ``ops
history``). ``claim`` and ``decide`` are operator actions sent to the account's actor over the
region's NATS (``--nats``, default ``$SAFEGUARDS_NATS_URL``), as ``ops override`` is, so they land
in the history with the operator's identity: a claim is a ``ReviewClaimed``; a decision is an
operator ``set_level`` (any level, the current one included), which closes the review.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from safeguards.core.errors import SafeguardsError
from safeguards.core.events import OperatorActionTaken, ReviewClaimed
from safeguards.core.ports import OpenReview
from safeguards.core.state import AccountState
from safeguards.ops.actions_cli import _common, _level, _send, _who
from safeguards.ops.cli import DB_HELP, _fail, _iso, _run, audited_store

MAX_REASON = 60


def register_ops(ops_sub: Any) -> None:
    queue = ops_sub.add_parser("queue", help="the review queue: list, claim and decide reviews",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    queue_sub = queue.add_subparsers(dest="queue_command", required=True)

    listing = queue_sub.add_parser("list", help="accounts whose review is open")
    listing.add_argument("--region", required=True, help="the residency region")
    listing.add_argument("--database-url", default=None, help=DB_HELP)
    listing.add_argument("--after", default=None, help="list accounts after this one (paging)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)

    claim = queue_sub.add_parser("claim", help="take an account's review (recorded in history)")
    _common(claim)
    claim.add_argument("--operator", required=True, help="the operator's identity")
    claim.add_argument("--reason", default="claimed for review", help="a note (kept in history)")
    claim.set_defaults(handler=_claim)

    decide = queue_sub.add_parser("decide", help="decide a review: set the account's level")
    _common(decide)
    _level(decide)
    _who(decide)
    decide.set_defaults(handler=_decide)


async def _open_reviews(args: argparse.Namespace) -> list[tuple[OpenReview, AccountState]]:
    store = await audited_store(args, f"queue:{args.region}")
    try:
        reviews: list[OpenReview] = await store.open_reviews(after=args.after, limit=args.limit)
        states: dict[str, AccountState] = await store.load_many([r.account_id for r in reviews])
        return [(r, states[r.account_id]) for r in reviews]
    finally:
        await store.close()


def review_json(review: OpenReview, state: AccountState) -> dict[str, Any]:
    return {"account": review.account_id, "level": state.level,
            "proposed_level": review.proposed_level, "requested_at": _iso(review.requested_at),
            "version": review.version, "rule": review.rule_id, "reason": review.reason,
            "claimed_by": review.claimed_by, "claimed_at": _iso(review.claimed_at) or None}


def _list(args: argparse.Namespace) -> int:
    try:
        rows = _run(_open_reviews, args)
    except SafeguardsError as exc:
        return _fail(exc)
    if args.json:
        json.dump([review_json(r, s) for r, s in rows], sys.stdout, indent=1)
        print()
        return 0
    if not rows:
        print(f"no open reviews in region {args.region}")
        return 0
    table = [("ACCOUNT", "LEVEL", "PROPOSED", "REQUESTED", "CLAIMED BY", "REASON")]
    for review, state in rows:
        reason = review.reason
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON - 1] + "~"
        table.append((review.account_id, f"L{state.level}", f"L{review.proposed_level}",
                      _iso(review.requested_at), review.claimed_by or "-", reason))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _claim(args: argparse.Namespace) -> int:
    return _send(args, ReviewClaimed(args.operator, args.reason))


def _decide(args: argparse.Namespace) -> int:
    expires: datetime | None = args.expires
    return _send(args, OperatorActionTaken(args.operator, "set_level", args.level, expires,
                                           args.reason))
