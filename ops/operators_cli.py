"""``safeguards ops operator add | remove | list``: who may act on accounts in a region.

    safeguards ops operator add alice --role admin --region eu
    safeguards ops operator list --region eu

``add`` makes the operator's Ed25519 key once (kept under the state folder for that operator's
own use) and registers its public key with the role in the region's registry, which the nodes
re-read when it changes. Roles: viewer (reads only), analyst (notes, review claims, appeals,
levels up to L3), admin (everything).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from safeguards.adapters.operators import add_operator, registry_path, remove_operator
from safeguards.core.errors import SafeguardsError
from safeguards.core.operators import ROLES
from safeguards.ops.cli import _fail


def register_ops(ops_sub: Any) -> None:
    operator = ops_sub.add_parser("operator", help="register the operators of a region")
    sub = operator.add_subparsers(dest="operator_command", required=True)
    add = sub.add_parser("add", help="register an operator (its key is made once)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--region", required=True)
    add.set_defaults(handler=_add)
    remove = sub.add_parser("remove", help="take an operator out of the region's registry")
    remove.add_argument("name")
    remove.add_argument("--region", required=True)
    remove.set_defaults(handler=_remove)
    listed = sub.add_parser("list", help="the region's operators and their roles")
    listed.add_argument("--region", required=True)
    listed.set_defaults(handler=_list)


def _add(args: argparse.Namespace) -> int:
    try:
        key = add_operator(args.region, args.name, args.role)
    except SafeguardsError as exc:
        return _fail(exc)
    print(f"operator {args.name} ({args.role}) registered in region {args.region}; "
          f"key {key} (keep it to yourself)")
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        removed = remove_operator(args.region, args.name)
    except SafeguardsError as exc:
        return _fail(exc)
    print(f"operator {args.name} {'removed' if removed else 'was not registered'}")
    return 0 if removed else 1


def _list(args: argparse.Namespace) -> int:
    path = registry_path(args.region)
    entries = json.loads(path.read_text()) if path.exists() else {}
    for name, entry in sorted(entries.items()):
        print(f"{name}\t{entry['role']}")
    return 0
