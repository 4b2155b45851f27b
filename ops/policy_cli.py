"""``safeguards ops policy apply | show``: the region's one policy, changed live.

    safeguards ops policy apply candidate.toml --region eu --operator alice --reason "case 88"
    safeguards ops policy show --region eu

``apply`` validates the document here (every problem listed), then sends it as a
``PolicyProposed`` signal to the region's policy history (``policy:<region>``) over its NATS; the
actor that owns it records the proposal and, if it validates, a ``PolicyChanged``. Actor nodes
put the newest change on the region's policy board, and every actor node, proxy and ext_proc
server of the region applies it within about a second. ``apply`` waits (``--wait`` seconds) until
the board shows it. Kill switches (``[categories.X] enabled = false``) and region modes
(``[policy] mode``: enforce, shadow, fail_open, fail_closed, refuse) are changes like any other.
The history itself reads like an account's: ``safeguards ops history policy:eu --region eu``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.policy_board import PolicyBoard, PublishedPolicy
from safeguards.core.errors import SafeguardsError
from safeguards.core.events import PolicyProposed
from safeguards.core.ids import policy_entity
from safeguards.core.policy import parse_policy
from safeguards.core.subjects import DEFAULT_PARTITIONS
from safeguards.ops.actions import (
    now_and_nonce,
    operator_connection,
    operator_signal,
    send_operator_signal,
)
from safeguards.ops.cli import _fail


def register_ops(ops_sub: Any) -> None:
    policy = ops_sub.add_parser("policy", help="the region's policy: apply a new one, show it")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    apply = sub.add_parser("apply", help="propose a policy document; in force once validated")
    apply.add_argument("file", type=Path)
    _bus(apply)
    apply.add_argument("--operator", required=True, help="the operator's identity")
    apply.add_argument("--reason", required=True, help="why (kept in the history)")
    apply.add_argument("--wait", type=float, default=15.0,
                       help="seconds to wait for the region to put it in force (0: do not wait)")
    apply.set_defaults(handler=_apply)
    show = sub.add_parser("show", help="the policy the region's board holds")
    _bus(show)
    show.set_defaults(handler=_show)


def _bus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", required=True)
    parser.add_argument("--nats", default=os.environ.get("SAFEGUARDS_NATS_URL"),
                        help="the region's NATS (default: $SAFEGUARDS_NATS_URL)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="the region's partition count (default %(default)s)")


async def read_board(nats_url: str, region: str) -> PublishedPolicy | None:
    nc = await operator_connection(nats_url, region)
    try:
        board = await PolicyBoard.open(nc.jetstream(), region, provision=False)
        return (await board.read())[0]
    finally:
        await nc.drain()


async def wait_in_force(nats_url: str, region: str, sha256: str,
                        timeout_s: float) -> PublishedPolicy | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        published = await read_board(nats_url, region)
        if published is not None and published.sha256 == sha256:
            return published
        await anyio.sleep(0.25)
    return None


def _from_board(read: Callable[..., Awaitable[PublishedPolicy | None]],
                *args: Any) -> tuple[PublishedPolicy | None, bool]:
    """What ``read`` got from the board, and whether it failed (the error is printed)."""
    try:
        return anyio.run(read, *args), False
    except (OSError, TimeoutError, BusUnavailable) as exc:
        print(f"error: could not read the region's policy board: {type(exc).__name__}",
              file=sys.stderr)
        return None, True


def _apply(args: argparse.Namespace) -> int:
    if not args.nats:
        print("error: no NATS: pass --nats or set SAFEGUARDS_NATS_URL", file=sys.stderr)
        return 2
    try:
        document = args.file.read_text("utf-8")
        policy = parse_policy(document, source=str(args.file))
        now, nonce = now_and_nonce()
        signal = operator_signal(policy_entity(args.region), args.region,
                                 PolicyProposed(args.operator, args.reason, document),
                                 now=now, nonce=nonce)
        anyio.run(send_operator_signal, args.nats, args.partitions, signal, args.operator)
    except OSError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except SafeguardsError as exc:
        return _fail(exc)
    print(f"proposed policy {policy.version} for region {args.region} (signal "
          f"{signal.signal_id})")
    if args.wait <= 0:
        return 0
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
    published, failed = _from_board(wait_in_force, args.nats, args.region, digest, args.wait)
    if failed:
        return 1
    if published is None:
        print(f"not in force after {args.wait:.0f} s: see `safeguards ops history "
              f"{policy_entity(args.region)} --region {args.region}`", file=sys.stderr)
        return 1
    print(f"policy {published.policy_version} in force in region {args.region} "
          f"(history v{published.history_version})")
    return 0


def _show(args: argparse.Namespace) -> int:
    if not args.nats:
        print("error: no NATS: pass --nats or set SAFEGUARDS_NATS_URL", file=sys.stderr)
        return 2
    published, failed = _from_board(read_board, args.nats, args.region)
    if failed:
        return 1
    if published is None:
        print(f"region {args.region}: no policy change yet; every part runs the policy it "
              "started with")
        return 0
    print(f"region {args.region}: policy {published.policy_version} (history "
          f"v{published.history_version}, sha256 {published.sha256[:16]})")
    print(published.document)
    return 0
