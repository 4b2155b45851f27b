"""``safeguards ops nats-authorization``: the NATS server configuration that admits a region's
processes, each only to its own role's subjects (``bus.nats_auth``).

    safeguards ops nats-authorization --region us --region eu [--home-routing] > auth.json

Prints the ``authorization`` block (JSON, which nats-server reads as configuration; include it
from the server's file) with every role's public key and permissions. Keys come from
``SAFEGUARDS_NATS_NKEY_<REGION>_<ROLE>`` where set, else the state folder, where missing made
there once; hand each process its own role's seed and nothing else.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from safeguards.adapters.bus.nats_auth import make_identities, server_authorization
from safeguards.core.errors import InvalidInput
from safeguards.ops.cli import _fail


def register_ops(ops_sub: Any) -> None:
    cmd = ops_sub.add_parser("nats-authorization",
                             help="print the NATS server authorization for regions' processes")
    cmd.add_argument("--region", action="append", required=True,
                     help="a region to admit (repeatable)")
    cmd.add_argument("--home-routing", action="store_true",
                     help="let each region's gate and classifier serve the other regions' "
                          "accounts (metadata and scores to their home, core.homes)")
    cmd.set_defaults(handler=_authorization)


def _authorization(args: argparse.Namespace) -> int:
    try:
        identities = make_identities(tuple(args.region))
    except InvalidInput as exc:
        return _fail(exc)
    print(json.dumps({"authorization": server_authorization(
        identities, home_routing=args.home_routing)}, indent=1))
    return 0
