"""``safeguards ops erase``: crypto-shred an account's personal data in its region.

    safeguards ops erase ACCOUNT --region eu --operator alice [--database-url URL]

Destroys the account's data key, under which its events' personal fields (``core.erasure``:
request digests, organisation, project and API-key ids, prompt link keys, content digests,
operator and appeal free text) were sealed; drops its snapshots; blanks the reasons of its
enforcement commands in the outbox; and appends an ``AccountErased`` tombstone naming the
operator. Its history keeps every score, level, rule and time, so folds, ``explain``, RCA reports
and backtests still run; they show the erased fields as ``[erased]`` and the erasure itself.

Irreversible, so it takes an admin who holds a registered operator key of the region (``ops
operator add NAME --role admin``): the command is signed with that key and recorded in the
region's audit of operator commands (``ops reads``) before anything is destroyed.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from safeguards.core.errors import InvalidInput, SafeguardsError
from safeguards.core.ids import validate_account_id
from safeguards.ops.cli import DB_HELP, _fail, _run, audited_store


def register_ops(ops_sub: Any) -> None:
    erase = ops_sub.add_parser("erase", help="destroy an account's data key (crypto-shredding)")
    erase.add_argument("account")
    erase.add_argument("--region", required=True)
    erase.add_argument("--database-url", default=None, help=DB_HELP)
    erase.add_argument("--operator", required=True,
                       help="the admin erasing it (a registered operator key of the region)")
    erase.set_defaults(handler=_erase)


def check_admin(region: str, operator: str) -> None:
    """An erasure is an admin's, signed with their registered key: refused otherwise."""
    from safeguards.adapters.operators import OperatorRegistry, OperatorSigner

    role = OperatorRegistry(region).role(operator)
    if role is None:
        raise InvalidInput(f"{operator} is not a registered operator of {region}")
    if role != "admin":
        raise InvalidInput(f"erasure takes an admin; {operator} is {role}")
    OperatorSigner(operator)  # raises where this machine holds no key for them


async def erase_account(args: argparse.Namespace) -> dict[str, Any]:
    validate_account_id(args.account)
    check_admin(args.region, args.operator)
    store = await audited_store(args, args.account)  # signed and recorded before it happens
    try:
        done = await store.erase(args.account, args.operator, datetime.now(UTC))
    finally:
        await store.close()
    return {"account": done.account_id, "erased_through": done.erased_through,
            "tombstone_version": done.tombstone_version, "keys_destroyed": done.keys_destroyed,
            "snapshots_dropped": done.snapshots_dropped,
            "outbox_rewritten": done.outbox_rewritten}


def _erase(args: argparse.Namespace) -> int:
    try:
        summary = _run(erase_account, args)
    except SafeguardsError as exc:
        return _fail(exc)
    print(json.dumps(summary))
    return 0
