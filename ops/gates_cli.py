"""``safeguards ops gates verify``: does what the gates would enforce match what was decided?

    safeguards ops gates verify --region eu [--limit 4096] [--nats URL] [--database-url URL]
                                [--operator NAME]

Gates enforce the last command on each account's subject of the region's enforcement stream.
For the accounts among the ``--limit`` most recently published outbox rows (the relay's own
reconciliation scan, ``EventStore.latest_published``), this compares the newest committed and
published command of each with the stream's last one, and reports each account whose stream
command is ``missing`` (none: gates apply no enforcement), ``stale`` (an older version: gates
apply an outdated level), ``differs`` (same version, another level) or ``forged`` (not signed by
a key the region's gates trust, or signed but for another region, subject or an impossible
level: the gates refuse it, so whoever put it there could not change enforcement, but someone
wrote to the stream who should not have). A stream command newer than the store's newest
published one is fine (published, not yet marked). Rows not yet published are the relay's, not
compared.

Read-only, recorded in the region's audit of operator reads (``ops reads``) before anything is
read. Prints one JSON line per mismatch and a summary; exits 1 when there is a mismatch, 0
otherwise. The relay's reconciliation (every ``reconcile_s``) restores lost commands; this lets
an operator confirm it did (runbook ``ops/runbooks/enforcement-drift.md``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from safeguards.core.errors import CodecError, InvalidInput, SafeguardsError
from safeguards.core.ids import validate_region
from safeguards.ops.cli import DB_HELP, _fail, _run, audited_store
from safeguards.ops.dlq_cli import nats_url, print_json_line


def register_ops(ops_sub: Any) -> None:
    gates = ops_sub.add_parser("gates", help="the enforcement the region's gates read")
    gates_sub = gates.add_subparsers(dest="gates_command", required=True)
    verify = gates_sub.add_parser("verify", help="compare the enforcement stream with the store")
    verify.add_argument("--region", required=True)
    verify.add_argument("--limit", type=int, default=4096,
                        help="recently published outbox rows whose accounts are compared")
    verify.add_argument("--operator", default=None,
                        help="who is reading (default $SAFEGUARDS_OPERATOR, else the OS user)")
    verify.add_argument("--nats", default=None, help="NATS URL (default $SAFEGUARDS_NATS_URL)")
    verify.add_argument("--database-url", default=None, help=DB_HELP)
    verify.set_defaults(handler=_verify, ops_command="gates-verify")


def compare(stored: Any, on_stream: Any | None) -> str:
    """``ok``, ``missing``, ``stale`` or ``differs`` for the store's newest published command
    and the stream's last one (None: none)."""
    if on_stream is None:
        return "missing"
    if on_stream.version < stored.version:
        return "stale"
    if on_stream.version == stored.version and on_stream.level != stored.level:
        return "differs"
    return "ok"


async def verify(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
                 ) -> dict[str, int]:
    """Compares; ``emit`` gets each mismatch. Returns the count of each outcome."""
    import anyio
    from nats.js.errors import NotFoundError

    from safeguards.adapters.bus.signing import command_problem, load_verifier
    from safeguards.core.codec import decode_command
    from safeguards.core.subjects import is_inputs_subject, stream_name
    from safeguards.ops.actions import operator_connection

    region = validate_region(args.region)
    if not 1 <= args.limit <= 100_000:
        raise InvalidInput("--limit must be between 1 and 100000")
    url = nats_url(args.nats)
    store = await audited_store(args, f"enforcement of {args.limit} recent rows")
    trusted = load_verifier(region)  # the keys the region's gates check commands against
    counts = {"checked": 0, "ok": 0, "missing": 0, "stale": 0, "differs": 0, "forged": 0,
              "unreadable": 0}
    try:
        newest = await store.latest_published(args.limit)
        nc = await operator_connection(url, region)
        try:
            js, stream = nc.jetstream(), stream_name(region, "ENFORCE")
            for row in newest:
                if is_inputs_subject(row.subject):
                    continue  # a forwarded signal, not an enforcement command
                counts["checked"] += 1
                try:
                    stored = decode_command(row.payload)
                    with anyio.fail_after(5):
                        try:
                            last = await js.get_last_msg(stream, row.subject)
                        except NotFoundError:
                            last = None
                    seen = None if last is None else decode_command(last.data or b"")
                except CodecError:
                    counts["unreadable"] += 1
                    emit({"subject": row.subject, "outcome": "unreadable"})
                    continue
                if last is not None and seen is not None:
                    why = trusted.problem(row.subject, last.data or b"", last.headers) \
                        or command_problem(seen, row.subject, region)
                    if why is not None:
                        counts["forged"] += 1
                        emit({"subject": row.subject, "outcome": "forged", "reason": why,
                              "stream_seq": last.seq})
                        continue
                outcome = compare(stored, seen)
                counts[outcome] += 1
                if outcome != "ok":
                    emit({"account": stored.account_id, "outcome": outcome,
                          "store": {"version": stored.version, "level": stored.level},
                          "stream": None if seen is None else {"version": seen.version,
                                                               "level": seen.level}})
        finally:
            await nc.close()
    finally:
        await store.close()
    return counts


def mismatches(counts: dict[str, int]) -> int:
    return sum(counts[k] for k in ("missing", "stale", "differs", "forged", "unreadable"))


def _verify(args: argparse.Namespace) -> int:
    try:
        counts = _run(lambda a: verify(a, print_json_line), args)
    except SafeguardsError as exc:
        return _fail(exc)
    print(json.dumps({"summary": counts}))
    return 1 if mismatches(counts) else 0
