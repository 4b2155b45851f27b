"""``safeguards ops verify``: is each history still the one that was written?

    safeguards ops verify ACCOUNT [ACCOUNT ...] --region eu [--database-url URL]
    safeguards ops verify --all --region eu

Reads each account's stored events with their chain links and checks them under the region's
chain key (``core.chain``): the first version where a history stops matching its chain is
reported (a changed, removed or re-ordered event; events written before chaining began are
counted as unchained). Exit status 1 when any history is broken.
"""

from __future__ import annotations

import argparse
import json
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


async def _reports(args: argparse.Namespace) -> list[ChainReport]:
    from safeguards.adapters.store.chain_keys import load_chain_keys

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
            reports.append(verify(keys, account, await store.chain(account)))
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
                              "why": r.why}))
        elif r.first_break is not None:
            print(f"{r.account_id}: BROKEN at version {r.first_break}: {r.why}")
        else:
            print(f"{r.account_id}: ok ({r.events} events, {r.unchained} unchained)")
    print(f"{len(reports)} histories checked, {len(broken)} broken", file=sys.stderr)
    return 1 if broken else 0
