"""``safeguards ops explain | rca | backtest``: explaining and re-deciding from stored history.

    safeguards ops explain ACCOUNT VERSION --region eu
    safeguards ops rca ACCOUNT --region eu --out report.html
    safeguards ops backtest --policy candidate.toml --region eu [--since TIME]

Databases are found as for ``ops history`` (``--database-url``, then
``SAFEGUARDS_DATABASE_URL_<REGION>``, then ``SAFEGUARDS_DATABASE_URL``). Nothing here writes to
the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safeguards.core.backtest import Divergence
from safeguards.core.errors import SafeguardsError
from safeguards.core.events import Event
from safeguards.core.ids import validate_account_id
from safeguards.core.state import AccountState
from safeguards.ops.cli import DB_HELP, _fail, _run, _time, audited_store


def register_ops(ops_sub: Any) -> None:
    explain = ops_sub.add_parser("explain", help="the causal chain behind one enforcement change")
    explain.add_argument("account")
    explain.add_argument("version", type=int, help="the version of an EnforcementChanged event")
    _region(explain)
    explain.set_defaults(handler=_explain)

    rca = ops_sub.add_parser("rca", help="a self-contained HTML root-cause report for an account")
    rca.add_argument("account")
    rca.add_argument("--out", type=Path, required=True, help="where to write the HTML report")
    _region(rca)
    rca.set_defaults(handler=_rca)

    backtest = ops_sub.add_parser(
        "backtest", help="replay a region's stored histories through a candidate policy")
    backtest.add_argument("--policy", type=Path, required=True, help="candidate policy TOML")
    backtest.add_argument("--since", type=_time, default=None,
                          help="compare decisions from this ISO time on (with a zone)")
    backtest.add_argument("--limit", type=int, default=50, help="accounts listed (default 50)")
    backtest.add_argument("--json", action="store_true", help="machine-readable output")
    _region(backtest)
    backtest.set_defaults(handler=_backtest)


def _region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", required=True, help="the residency region")
    parser.add_argument("--database-url", default=None, help=DB_HELP)


async def _account_history(args: argparse.Namespace) -> tuple[list[Event], AccountState | None]:
    """The account's kept events and, where retention truncated it, its retention base."""
    from safeguards.adapters.store.retention_base import base_state

    validate_account_id(args.account)
    store = await audited_store(args, args.account, pool_size=2)
    try:
        events: list[Event] = await store.history(args.account)
        return events, await base_state(store, args.account)
    finally:
        await store.close()


def _explain(args: argparse.Namespace) -> int:
    from safeguards.ops.explain import NotAnEnforcement, explain, render

    try:
        history, base = _run(_account_history, args)
        print(render(explain(history, args.version, base)))
    except SafeguardsError as exc:
        return _fail(exc)
    except NotAnEnforcement as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _rca(args: argparse.Namespace) -> int:
    from safeguards.ops.rca import rca_html

    try:
        history, base = _run(_account_history, args)
    except SafeguardsError as exc:
        return _fail(exc)
    if not history:
        print(f"error: no events for account {args.account!r} in region {args.region!r}",
              file=sys.stderr)
        return 2
    args.out.write_text(rca_html(args.account, args.region, history, datetime.now(UTC), base),
                        "utf-8")
    print(f"wrote {args.out} ({len(history)} events)")
    return 0


async def _backtest_async(args: argparse.Namespace) -> Any:
    from safeguards.ops.backtest import backtest_region

    store = await audited_store(args, f"region:{args.region}", pool_size=2)
    try:
        return await backtest_region(store, args.candidate, since=args.since)
    finally:
        await store.close()


def _backtest(args: argparse.Namespace) -> int:
    from safeguards.core.policy import parse_policy

    try:
        args.candidate = parse_policy(args.policy.read_text("utf-8"), source=str(args.policy))
        report = _run(_backtest_async, args)
    except SafeguardsError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps({
            "region": report.region, "policy_version": report.candidate_version,
            "accounts": report.accounts, "events": report.events,
            "events_per_s": round(report.events_per_s),
            "from_retention_base": report.based_accounts, "not_replayed": report.not_replayed,
            "differing": [{"account": r.account_id, "change": r.describe(),
                           "base_version": r.base_version,
                           "first_divergence": _divergence(r.divergence)}
                          for r in report.differing],
        }))
    else:
        print(report.render(limit=args.limit))
    if report.not_replayed:  # the comparison is incomplete: as ops retention, exit 1
        print(f"error: {len(report.not_replayed)} account(s) not replayed (retention base "
              "unreadable, or truncated meanwhile)", file=sys.stderr)
        return 1
    return 0


def _divergence(d: Divergence | None) -> dict[str, object] | None:
    """Where the candidate's path first parts from the stored one, for ``--json``."""
    if d is None:
        return None
    return {"version": d.version, "stored": list(d.stored) if d.stored else None,
            "candidate": list(d.candidate) if d.candidate else None}
