"""``safeguards ops override | clear | approve | reject | appeal-file | appeal-resolve``: operator
actions.

    safeguards ops override ACCOUNT --region eu --level 4 --operator alice --reason "case 4411"
    safeguards ops clear ACCOUNT --region eu --operator alice --reason "verified business"
    safeguards ops approve ACCOUNT --region eu --level 0 --operator bob --reason "read case 4411"
    safeguards ops reject ACCOUNT --region eu --level 0 --operator bob --reason "not enough"
    safeguards ops appeal-file ACCOUNT --region eu --appeal-id A-17 --by ACCOUNT --reason "..."
    safeguards ops appeal-resolve ACCOUNT --region eu --appeal-id A-17 --outcome overturned \\
        --level-after 0 --operator bob --reason "false positive"

Each action is a signal to the account's actor over the region's NATS (``--nats``, default
``$SAFEGUARDS_NATS_URL``), signed with the operator's key (``safeguards ops operator add``); the
decision, with the operator and reason, lands in the history. With the region's database
(``--database-url``) the command waits until the actor has committed it and only then says
"applied" (JetStream's acknowledgement alone says "sent"), re-sending it meanwhile. A node
refuses (dead-letters) an action that no registered operator, whose role allows it, signed in
the name it gives: the wait then ends in an error.

Under the default policy two people decide the gravest actions: an override to L5, and a clear
or a lower level for an account at L4 or L5, are recorded as an approval request (``ops history``
shows it) and change nothing until a second admin runs ``ops approve`` with the same target level
(0 for a clear) within a day, or an admin (its proposer included) runs ``ops reject`` with that
level, which drops it. An overturned appeal whose ``--level-after`` lowers an account at
L4 or L5 is such a request too (the appeal itself closes at once).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import Any

from safeguards.core.errors import SafeguardsError
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    Observation,
    OperatorActionTaken,
    Signal,
)
from safeguards.core.subjects import DEFAULT_PARTITIONS
from safeguards.ops.actions import (
    APPLY_TIMEOUT_S,
    apply_operator_signal,
    now_and_nonce,
    operator_signal,
    send_operator_signal,
)
from safeguards.ops.cli import _fail, _time


def register_ops(ops_sub: Any) -> None:
    override = ops_sub.add_parser("override", help="set an account's enforcement level")
    _common(override)
    _level(override)
    _who(override)
    override.set_defaults(handler=_override)

    clear = ops_sub.add_parser("clear", help="return an account to L0 and forgive its points")
    _common(clear)
    _who(clear)
    clear.set_defaults(handler=_clear)

    approve = ops_sub.add_parser("approve", help="as a second operator, carry out the action an "
                                                 "account's approval request holds")
    _common(approve)
    approve.add_argument("--level", type=int, required=True, choices=range(6),
                         help="the target level of the request you approve (0 for a clear)")
    _who(approve)
    approve.set_defaults(handler=_approve)

    reject = ops_sub.add_parser("reject", help="decline (or, as its proposer, withdraw) the "
                                               "action an account's approval request holds")
    _common(reject)
    reject.add_argument("--level", type=int, required=True, choices=range(6),
                        help="the target level of the request you reject (0 for a clear)")
    _who(reject)
    reject.set_defaults(handler=_reject)

    filed = ops_sub.add_parser("appeal-file", help="record an appeal against an enforcement")
    _common(filed)
    filed.add_argument("--appeal-id", required=True)
    filed.add_argument("--by", required=True, help="who filed it")
    filed.add_argument("--operator", required=True, help="the operator recording it")
    filed.add_argument("--reason", required=True)
    filed.set_defaults(handler=_appeal_file)

    resolved = ops_sub.add_parser("appeal-resolve", help="record the outcome of an appeal")
    _common(resolved)
    resolved.add_argument("--appeal-id", required=True)
    resolved.add_argument("--outcome", required=True, choices=("upheld", "overturned"))
    resolved.add_argument("--level-after", type=int, required=True, choices=range(6))
    _who(resolved)
    resolved.set_defaults(handler=_appeal_resolve)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account")
    parser.add_argument("--region", required=True)
    parser.add_argument("--nats", default=os.environ.get("SAFEGUARDS_NATS_URL"),
                        help="the region's NATS (default: $SAFEGUARDS_NATS_URL)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="the region's partition count (default %(default)s)")
    parser.add_argument("--database-url", default=None,
                        help="the region's PostgreSQL: wait until the account's actor has "
                             "committed the action before saying it is applied (default: "
                             "$SAFEGUARDS_DATABASE_URL_<REGION>; without one, only 'sent')")
    parser.add_argument("--wait", type=float, default=APPLY_TIMEOUT_S,
                        help="how long to wait for the commit, seconds (default %(default)s)")


def _level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--level", type=int, required=True, choices=range(6))
    parser.add_argument("--expires", type=_time, default=None,
                        help="ISO time with a zone (default: the level's policy duration)")


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", required=True, help="the operator's identity")
    parser.add_argument("--reason", required=True, help="why (kept in the history)")


def _send(args: argparse.Namespace, observation: Observation) -> int:
    import anyio

    if not args.nats:
        print("error: no NATS: pass --nats or set SAFEGUARDS_NATS_URL", file=sys.stderr)
        return 2
    database_url = args.database_url or os.environ.get(
        f"SAFEGUARDS_DATABASE_URL_{args.region.upper()}") or None
    now, nonce = now_and_nonce()
    try:
        signal = operator_signal(args.account, args.region, observation, now=now, nonce=nonce)
        if database_url is None:
            anyio.run(send_operator_signal, args.nats, args.partitions, signal, args.operator)
        else:
            took, events = anyio.run(_apply, args, signal, database_url)
            print(f"applied {observation.TYPE} for {args.account} (signal {signal.signal_id}): "
                  f"committed to the account's history after {took:.1f}s "
                  f"({', '.join(events) or 'no change'})")
            return 0
    except SafeguardsError as exc:
        return _fail(exc)
    except (OSError, TimeoutError) as exc:
        print(f"error: could not reach NATS at {args.nats}: {type(exc).__name__}",
              file=sys.stderr)
        return 1
    print(f"sent {observation.TYPE} for {args.account} (signal {signal.signal_id}); not yet "
          "confirmed applied (give --database-url to wait for the commit)")
    return 0


async def _apply(args: argparse.Namespace, signal: Signal, database_url: str
                 ) -> tuple[float, list[str]]:
    """Send and wait for the commit; the seconds it took and what the actor recorded."""
    from safeguards.adapters.store import PostgresEventStore

    async with PostgresEventStore(args.region, database_url) as store:
        took = await apply_operator_signal(args.nats, args.partitions, signal, args.operator,
                                           store.inbox_contains, timeout_s=args.wait)
        events = [e.body.TYPE for e in await store.history(args.account)
                  if e.causation_id == signal.signal_id]
    return took, events


def _override(args: argparse.Namespace) -> int:
    expires: datetime | None = args.expires
    return _send(args, OperatorActionTaken(args.operator, "set_level", args.level, expires,
                                           args.reason))


def _clear(args: argparse.Namespace) -> int:
    return _send(args, OperatorActionTaken(args.operator, "clear", None, None, args.reason))


def _approve(args: argparse.Namespace) -> int:
    return _send(args, OperatorActionTaken(args.operator, "approve", args.level, None,
                                           args.reason))


def _reject(args: argparse.Namespace) -> int:
    return _send(args, OperatorActionTaken(args.operator, "reject", args.level, None,
                                           args.reason))


def _appeal_file(args: argparse.Namespace) -> int:
    return _send(args, AppealFiled(args.appeal_id, args.by, args.reason))


def _appeal_resolve(args: argparse.Namespace) -> int:
    return _send(args, AppealResolved(args.appeal_id, args.operator, args.outcome,
                                      args.level_after, args.reason))
