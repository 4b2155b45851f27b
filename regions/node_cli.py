"""``safeguards node``: run one node of a region (several per region share its partitions)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from typing import Any

from safeguards.adapters.metrics_endpoint import add_metrics_arguments
from safeguards.core.subjects import DEFAULT_PARTITIONS

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="run one account-actor node of a region")
    node.add_argument("--region", required=True, help="the region this node serves (e.g. eu)")
    node.add_argument("--nats", default=os.environ.get("SAFEGUARDS_NATS_URL") or DEFAULT_NATS_URL,
                      help="the region's NATS (default: $SAFEGUARDS_NATS_URL or %(default)s)")
    node.add_argument("--database-url", default=None,
                      help="the region's PostgreSQL (default: $SAFEGUARDS_DATABASE_URL_<REGION>, "
                           "else $SAFEGUARDS_DATABASE_URL)")
    node.add_argument("--node-id", default=None, help="a stable name for this node")
    node.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                      help="partitions of the region (fixed per region; default %(default)s)")
    node.add_argument("--peer", action="append", default=[],
                      help="a region whose gates serve this region's accounts and forward "
                           "their scores here (home routing; repeat per region)")
    node.add_argument("--log-level", default="INFO")
    node.add_argument("--stats-interval", type=float, default=0.0,
                      help="print the node's counters as a JSON line every N seconds")
    add_metrics_arguments(node)
    node.set_defaults(handler=_node)


def _node(args: argparse.Namespace) -> int:
    import anyio

    database_url = args.database_url or os.environ.get(
        f"SAFEGUARDS_DATABASE_URL_{args.region.upper()}") or os.environ.get(
        "SAFEGUARDS_DATABASE_URL")
    if not database_url:
        print("safeguards node: --database-url (or SAFEGUARDS_DATABASE_URL_<REGION> or "
              "SAFEGUARDS_DATABASE_URL) is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from safeguards.actors.settings import NodeSettings
    from safeguards.regions.nodes import run_node

    # Fault tests widen the commit-to-ack window of node processes they will SIGKILL.
    fault_delay = float(os.environ.get("SAFEGUARDS_FAULT_ACK_DELAY_S", "0") or 0)
    settings = NodeSettings(fault_ack_delay_s=fault_delay)
    metrics = anyio.run(functools.partial(
        run_node, args.region, args.nats, database_url, args.node_id, args.partitions, settings,
        args.stats_interval, tuple(args.peer), metrics_port=args.metrics_port,
        metrics_host=args.metrics_host))
    print(json.dumps(metrics), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m safeguards.regions.node_cli node ...``: the node command alone, for process-level
    tests and supervisors that should not load every other area's commands."""
    parser = argparse.ArgumentParser(prog="safeguards-node")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
