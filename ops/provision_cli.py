"""``safeguards ops provision``: a region's own PostgreSQL role and database, made by the
server's administrator (``store.region_roles``).

    safeguards ops provision --region eu --admin-url postgresql://postgres@db-eu:5432/postgres

Creates (or brings up to date) the login role ``sg_<region>`` with the region's password
(``$SAFEGUARDS_DATABASE_PASSWORD_<REGION>``, else ``<state>/postgres-<region>.password``, made on
first use), the database (``--database``, default ``safeguards_<region>``) closed to every other
role, its schema migrated, and its rows granted to the role. Prints the URL the region's
processes connect with (``SAFEGUARDS_DATABASE_URL_<REGION>``): it names the role and holds no
password; each process reads the password where this command left it. Safe to repeat, and the
way to migrate after an upgrade (a region's role may read and write rows, never change the
schema). The administrator's URL is used for this and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from safeguards.core.errors import SafeguardsError
from safeguards.ops.cli import UsageError, _fail, _run


def register_ops(ops_sub: Any) -> None:
    cmd = ops_sub.add_parser("provision", help="make a region's PostgreSQL role and database "
                                               "(administrator's credential)")
    cmd.add_argument("--region", required=True)
    cmd.add_argument("--admin-url", default=None,
                     help="the server's administrative URL (default: $SAFEGUARDS_DATABASE_URL)")
    cmd.add_argument("--database", default=None, help="default: safeguards_<region>")
    cmd.set_defaults(handler=_provision)


async def provision(args: argparse.Namespace) -> dict[str, Any]:
    from safeguards.adapters.keyfiles import state_dir
    from safeguards.adapters.store.migrate import head_revision
    from safeguards.adapters.store.region_roles import provision_region, region_role

    admin_url = args.admin_url or os.environ.get("SAFEGUARDS_DATABASE_URL")
    if not admin_url:
        raise UsageError("pass --admin-url or set SAFEGUARDS_DATABASE_URL")
    url = await provision_region(admin_url, args.region, args.database)
    env = f"SAFEGUARDS_DATABASE_PASSWORD_{args.region.upper()}"
    return {"region": args.region, "role": region_role(args.region), "database_url": url,
            "revision": head_revision(),
            "password": f"${env}" if os.environ.get(env)
            else str(state_dir() / f"postgres-{args.region}.password")}


def _provision(args: argparse.Namespace) -> int:
    try:
        summary = _run(provision, args)
    except SafeguardsError as exc:
        return _fail(exc)
    print(json.dumps(summary))
    return 0
