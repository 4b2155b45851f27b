"""``safeguards region``: one region's whole service in its own process.

Two actor nodes, the classifier adapter and the inline proxy of one region, against the given
NATS and PostgreSQL. When it is serving it prints one JSON line with its endpoints (what a
launcher waits for); SIGTERM or SIGINT drains it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from typing import Any

from safeguards.core.subjects import DEFAULT_PARTITIONS


def register(sub: Any) -> None:
    region = sub.add_parser("region", help="run one region's whole service in this process")
    region.add_argument("--region", required=True)
    region.add_argument("--nats", required=True, help="the region's NATS URL")
    region.add_argument("--database-url", required=True, help="the region's PostgreSQL URL")
    region.add_argument("--upstream", required=True, help="the model endpoint behind the proxy")
    region.add_argument("--proxy-port", type=int, default=0, help="default: a free port")
    region.add_argument("--nodes", type=int, default=2, help="actor nodes (default 2)")
    region.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    region.add_argument("--peer", action="append", default=[],
                        help="another region whose accounts this one serves by their home's "
                             "rules (home routing; repeat per region)")
    region.add_argument("--policy", default=None, help="policy TOML (default: shipped)")
    region.add_argument("--log-level", default=os.environ.get("SAFEGUARDS_LOG_LEVEL", "WARNING"))
    region.set_defaults(handler=_region)


def _region(args: argparse.Namespace) -> int:
    import anyio

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from safeguards.core.policy import Policy, default_policy, parse_policy

    policy: Policy = default_policy()
    if args.policy:
        with open(args.policy, encoding="utf-8") as f:
            policy = parse_policy(f.read(), source=args.policy)
    anyio.run(_serve, args, policy)
    return 0


async def _serve(args: argparse.Namespace, policy: Any) -> None:
    import anyio

    from safeguards.adapters.heap import settle_heap
    from safeguards.regions.config import RegionConfig
    from safeguards.regions.process_metrics import RegionMetrics
    from safeguards.regions.stack import RegionStack

    config = RegionConfig(args.region, args.database_url, args.nats, args.partitions,
                          peers=tuple(args.peer))
    stack = RegionStack(config, args.upstream, policy=policy,
                        proxy_port=args.proxy_port or None, nodes=args.nodes)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            endpoints = await tg.start(stack.run)
            metrics = RegionMetrics(stack)  # nodes, relay, classifier on the proxy's /metrics
            tg.start_soon(metrics.watch_backlog)
            settle_heap()  # models, caches and modules are loaded: keep them out of GC scans
            print(json.dumps({"ready": True, **asdict(endpoints)}), flush=True)
            async for _ in signals:
                stack.request_stop()
                metrics.stop()
                break
