"""``safeguards ops home`` and ``ops migrate-home``: where an account is homed (``core.homes``).

    safeguards ops home ACCOUNT --region eu [--nats URL]              # eu's directory entry
    safeguards ops home ACCOUNT --region eu --onboard [--partitions 16]
    safeguards ops migrate-home ACCOUNT --from us --to eu --operator alice [--nats URL]
                                [--from-database-url URL] [--to-database-url URL]

``--onboard`` is the CSP's onboarding signal: the account is homed in ``--region`` from now on
(an entry set by onboarding), whichever region serves it first.

``migrate-home`` is the only way an account changes home. An admin of the old home (a
registered operator key, as for ``ops erase``) moves its history to the new home's store
(``adapters/store/home_move.py``: same events in the new region, its newest enforcement
command re-issued there), moves the directory entry (the new home's set by ``migration``, the
old home's removed), brings over what arrived meanwhile, then erases the old home's copy
(crypto-shredding and a tombstone naming the operator, as ``ops erase``). Both commands also
write the account's key in the global home register (``bus.home_claims``): every gate watching
it drops the home it kept for the account, so its next request asks the directories again
(with the watch down, a gate keeps a home for up to a minute: a request served in that window
may still reach the old home after its tombstone, and ``ops history`` shows it there).

NATS: ``--nats`` or ``$SAFEGUARDS_NATS_URL``, as each region's operator role.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from typing import Any

from safeguards.core.errors import InvalidInput, SafeguardsError
from safeguards.core.homes import HomeEntry
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.subjects import DEFAULT_PARTITIONS
from safeguards.ops.cli import DB_HELP, _fail, _run, database_url
from safeguards.ops.erase_cli import check_admin


def register_ops(ops_sub: Any) -> None:
    home = ops_sub.add_parser("home", help="an account's entry in a region's home directory")
    home.add_argument("account")
    home.add_argument("--region", required=True)
    home.add_argument("--nats", default=None, help="NATS URL (default $SAFEGUARDS_NATS_URL)")
    home.add_argument("--onboard", action="store_true",
                      help="home the account in --region (the CSP's onboarding signal)")
    home.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                      help="the region's partition count")
    home.set_defaults(handler=_home)
    move = ops_sub.add_parser("migrate-home", help="move an account and its history to "
                                                   "another home region")
    move.add_argument("account")
    move.add_argument("--from", dest="source", required=True, help="its home now")
    move.add_argument("--to", dest="target", required=True, help="its new home")
    move.add_argument("--operator", required=True, help="an admin of the old home")
    move.add_argument("--nats", default=None, help="NATS URL (default $SAFEGUARDS_NATS_URL)")
    move.add_argument("--from-database-url", default=None, help=DB_HELP)
    move.add_argument("--to-database-url", default=None, help=DB_HELP)
    move.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                      help="the new home's partition count")
    move.set_defaults(handler=_migrate)


def _nats_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("SAFEGUARDS_NATS_URL")
    if not url:
        raise InvalidInput("no NATS: pass --nats or set SAFEGUARDS_NATS_URL")
    return url


async def _directory(url: str, region: str) -> tuple[Any, Any]:
    """(connection, the region's directory) as the region's operator."""
    nc, directory, _ = await _directories(url, region)
    return nc, directory


async def _directories(url: str, region: str) -> tuple[Any, Any, Any]:
    """(connection, the region's directory, the global home register) as its operator."""
    from safeguards.adapters.bus.connect import connect
    from safeguards.adapters.bus.home_claims import HomeClaims
    from safeguards.adapters.bus.homes import HomeDirectory
    from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity

    nc = await connect(url, name=f"safeguards-ops-{region}", once=True,
                       identity=nats_identity(region, NatsRole.OPERATOR))
    js = nc.jetstream()
    return nc, await HomeDirectory.open(js, region), await HomeClaims.open(js)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def _home_async(args: argparse.Namespace) -> dict[str, Any]:
    account, region = validate_account_id(args.account), validate_region(args.region)
    nc, directory, claims = await _directories(_nats_url(args.nats), region)
    try:
        if args.onboard:
            onboarded = HomeEntry(region, args.partitions, "onboarding", _now())
            await directory.put(account, onboarded)
            await claims.notice(account, onboarded)  # gates drop what they kept
        entry = await directory.local(account)
    finally:
        await nc.close()
    return {"account": account, "region": region,
            "entry": None if entry is None else {"home": entry.home, "set_by": entry.set_by,
                                                 "since": entry.since,
                                                 "partitions": entry.partitions}}


def _home(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(_run(_home_async, args)))
    except SafeguardsError as exc:
        return _fail(exc)
    return 0


async def _record(store: Any, operator: str, account: str) -> None:
    """Audited in the region's operator reads, signed with the operator's key."""
    from safeguards.adapters.operators import OperatorSigner

    signature = OperatorSigner(operator).sign_read(store.region, "migrate-home", account)
    await store.record_read(operator, "migrate-home", account, signature)


async def migrate_home(args: argparse.Namespace) -> dict[str, Any]:
    from safeguards.adapters.store import PostgresEventStore
    from safeguards.adapters.store.home_move import copy_history

    account = validate_account_id(args.account)
    source, target = validate_region(args.source), validate_region(args.target)
    if source == target:
        raise InvalidInput("--from and --to name the same region")
    check_admin(source, args.operator)
    url = _nats_url(args.nats)
    async with PostgresEventStore(source, database_url(source, args.from_database_url)) as old, \
            PostgresEventStore(target, database_url(target, args.to_database_url)) as new:
        await _record(old, args.operator, account)
        await _record(new, args.operator, account)
        moved = await copy_history(old, new, account)
        old_nc, old_directory = await _directory(url, source)
        new_nc, new_directory, claims = await _directories(url, target)
        try:
            entry = HomeEntry(target, args.partitions, "migration", _now())
            await new_directory.put(account, entry)
            await old_directory.remove(account)
            await claims.notice(account, entry)  # gates drop the old home now
        finally:
            await old_nc.close()
            await new_nc.close()
        tail = await copy_history(old, new, account)  # what arrived while it moved
        erased = await old.erase(account, args.operator, datetime.now(UTC))
    return {"account": account, "from": source, "to": target, "events_moved": moved + tail,
            "old_home_tombstone_version": erased.tombstone_version}


def _migrate(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(_run(migrate_home, args)))
    except SafeguardsError as exc:
        return _fail(exc)
    return 0
