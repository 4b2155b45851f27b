"""``safeguards ops verify``: is each history still the one that was written? ``ops reads``:
who read what, and whether a registered operator's key signed it.

    safeguards ops verify ACCOUNT [ACCOUNT ...] --region eu [--database-url URL]
    safeguards ops verify --all --region eu
    safeguards ops reads --region eu [--limit 100] [--json]
    safeguards ops retention --region eu [--inbox-days 30 --outbox-days 7 --snapshot-days 7]
                             [--event-days 365] [--dry-run]

Reads each account's stored events with their chain links and checks them under the region's
chain key (``core.chain``): the first version where a history stops matching its chain is
reported (a changed, removed or re-ordered event; events written before chaining began are
counted as unchained). Exit status 1 when any history is broken.

``reads`` lists the newest audited reads (itself one), each "signed" when a registered operator's
key of the region signed it, else "unsigned", "unknown_operator" or "bad_signature".

``retention`` removes (``--dry-run``: counts) inbox keys, published outbox rows and superseded
snapshots past their time-to-live (``adapters/store/retention.py`` says what stays and why),
and with an event TTL (``--event-days`` or ``SAFEGUARDS_EVENT_TTL_DAYS_<REGION>``) truncates
accounts' events older than it behind a chain anchor, after snapshotting the state they fold to
(``adapters/store/event_retention.py``); ``verify`` checks such histories from their anchor.
First it carries each truncated history's retention base made by an earlier fold to this
build's fold (``adapters/store/retention_base.py``); ``retention_bases`` in its output counts the
bases of another fold (``other_fold``), those it carried, and those this build cannot carry
(``unreadable``, with the accounts: quarantined where loaded, never truncated further; exit 1).
Recorded in the audit like a read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from safeguards.core.chain import ChainReport, verify
from safeguards.core.errors import SafeguardsError
from safeguards.ops.cli import DB_HELP, _fail, _run, audited_store


def register_ops(ops_sub: Any) -> None:
    parser = ops_sub.add_parser("verify", help="check accounts' histories against their chain")
    parser.add_argument("accounts", nargs="*", help="account ids (or --all)")
    parser.add_argument("--all", action="store_true", help="every account of the region")
    parser.add_argument("--region", required=True)
    parser.add_argument("--database-url", default=None, help=DB_HELP)
    parser.add_argument("--json", action="store_true", help="one JSON line per account")
    parser.set_defaults(handler=_verify)

    reads = ops_sub.add_parser("reads", help="the audit of operator reads, signatures checked")
    reads.add_argument("--region", required=True)
    reads.add_argument("--database-url", default=None, help=DB_HELP)
    reads.add_argument("--limit", type=int, default=100)
    reads.add_argument("--json", action="store_true", help="one JSON line per read")
    reads.set_defaults(handler=_reads)

    retention = ops_sub.add_parser("retention", help="remove inbox keys, published outbox rows "
                                                     "and old snapshots past their TTL")
    retention.add_argument("--region", required=True)
    retention.add_argument("--database-url", default=None, help=DB_HELP)
    retention.add_argument("--inbox-days", type=float, default=30.0)
    retention.add_argument("--outbox-days", type=float, default=7.0)
    retention.add_argument("--snapshot-days", type=float, default=7.0)
    retention.add_argument("--event-days", type=float, default=None,
                           help="truncate events older than this (at least 30), snapshotting "
                                "first; default: $SAFEGUARDS_EVENT_TTL_DAYS_<REGION>, else "
                                "events are kept")
    retention.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    retention.set_defaults(handler=_retention)


async def _purge(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, Any]]:
    from datetime import UTC, datetime

    from safeguards.adapters.store.event_retention import EventRetention, truncate_events
    from safeguards.adapters.store.retention import RetentionPolicy
    from safeguards.adapters.store.retention_base import carry_bases

    policy = RetentionPolicy(args.inbox_days * 86400, args.outbox_days * 86400,
                             args.snapshot_days * 86400)
    event_days = args.event_days
    if event_days is None:
        configured = os.environ.get(f"SAFEGUARDS_EVENT_TTL_DAYS_{args.region.upper()}")
        event_days = float(configured) if configured else None
    events = None if event_days is None else EventRetention(event_days * 86400)
    store = await audited_store(args, "dry-run" if args.dry_run else "purge")
    try:
        now = datetime.now(UTC)
        counts: dict[str, int] = {}
        bases = await carry_bases(store, dry_run=args.dry_run)  # before any truncation
        if events is not None:  # first: the snapshots it writes are kept by the purge
            truncated = await truncate_events(store, events, now, dry_run=args.dry_run)
            counts["events"], counts["event_accounts"] = truncated["events"], truncated["accounts"]
        counts.update(await store.purge(policy, now, dry_run=args.dry_run))
        return counts, bases
    finally:
        await store.close()


def _retention(args: argparse.Namespace) -> int:
    try:
        counts, bases = _run(_purge, args)
    except SafeguardsError as exc:
        return _fail(exc)
    print(json.dumps({"dry_run": args.dry_run,
                      ("would_remove" if args.dry_run else "removed"): counts,
                      "retention_bases": bases}))
    return 1 if bases["unreadable"] else 0


async def _audited_reads(args: argparse.Namespace) -> list[dict[str, str]]:
    from safeguards.adapters.operators import OperatorRegistry

    registry = OperatorRegistry(args.region)
    store = await audited_store(args, "operator_reads")
    try:
        rows = await store.operator_reads(args.limit)
    finally:
        await store.close()
    return [{"at": at.isoformat(), "operator": operator, "command": command,
             "subject": subject,
             "status": registry.read_status(args.region, operator, command, subject, signature)}
            for at, operator, command, subject, signature in rows]


def _reads(args: argparse.Namespace) -> int:
    try:
        reads = _run(_audited_reads, args)
    except SafeguardsError as exc:
        return _fail(exc)
    for r in reads:
        print(json.dumps(r) if args.json else
              f"{r['at']}  {r['operator']:<20} {r['status']:<16} {r['command']} {r['subject']}")
    return 0


async def _reports(args: argparse.Namespace) -> list[ChainReport]:
    from safeguards.adapters.store.chain_keys import load_chain_keys
    from safeguards.adapters.store.event_retention import chain_anchor

    keys = load_chain_keys(args.region)
    subject = f"region:{args.region}" if args.all else ",".join(args.accounts)[:256]
    store = await audited_store(args, subject)
    reports: list[ChainReport] = []
    try:
        accounts: list[str] = list(args.accounts)
        if args.all:
            after: str | None = None
            while page := await store.account_ids(after=after, limit=1000):
                accounts += page
                after = page[-1]
        for account in accounts:
            reports.append(verify(keys, account, await store.chain(account),
                                  await chain_anchor(store, account)))
    finally:
        await store.close()
    return reports


def _verify(args: argparse.Namespace) -> int:
    if not args.accounts and not args.all:
        print("error: name accounts or pass --all", file=sys.stderr)
        return 2
    try:
        reports = _run(_reports, args)
    except SafeguardsError as exc:
        return _fail(exc)
    broken = [r for r in reports if r.first_break is not None]
    for r in reports:
        if args.json:
            print(json.dumps({"account": r.account_id, "events": r.events,
                              "unchained": r.unchained, "first_break": r.first_break,
                              "why": r.why, "retained_from": r.retained_from}))
        elif r.first_break is not None:
            print(f"{r.account_id}: BROKEN at version {r.first_break}: {r.why}")
        else:
            kept = f", from version {r.retained_from}" if r.retained_from > 1 else ""
            print(f"{r.account_id}: ok ({r.events} events, {r.unchained} unchained{kept})")
    print(f"{len(reports)} histories checked, {len(broken)} broken", file=sys.stderr)
    return 1 if broken else 0
