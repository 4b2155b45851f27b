"""``safeguards console`` and ``safeguards console-link``.

    safeguards console --region eu [--database-url URL] [--nats URL] [--port 8710]
                       [--gate-metrics http://127.0.0.1:PORT/metrics ...]
    safeguards console-link alice --region eu [--url http://127.0.0.1:8710]

The console serves one region (databases as for ``ops history``; NATS from ``--nats`` or
``$SAFEGUARDS_NATS_URL``, needed to act). ``console-link`` prints a sign-in link for a
registered operator of the region whose key is in this machine's state folder: it is good for
five minutes, once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse
from typing import Any

from safeguards.core.subjects import DEFAULT_PARTITIONS

DEFAULT_PORT = 8710


def register(sub: Any) -> None:
    console = sub.add_parser("console", help="serve the operators' web console of a region",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    console.add_argument("--region", required=True)
    console.add_argument("--database-url", default=None,
                         help="default: $SAFEGUARDS_DATABASE_URL_<REGION>, then "
                              "$SAFEGUARDS_DATABASE_URL")
    console.add_argument("--nats", default=os.environ.get("SAFEGUARDS_NATS_URL"),
                         help="the region's NATS, to send operator actions")
    console.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    console.add_argument("--host", default="127.0.0.1")
    console.add_argument("--port", type=int, default=DEFAULT_PORT)
    console.add_argument("--gate-metrics", action="append", default=[],
                         help="an inline adapter's /metrics URL, for the health page "
                              "(repeatable)")
    console.add_argument("--secure-cookies", action="store_true",
                         help="send session cookies over https only (behind TLS)")
    console.set_defaults(handler=_serve)

    link = sub.add_parser("console-link", help="print a sign-in link to a region's console")
    link.add_argument("operator")
    link.add_argument("--region", required=True)
    link.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                      help="the console's address")
    link.set_defaults(handler=_link)


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from safeguards.core.errors import SafeguardsError
    from safeguards.ops.cli import database_url
    from safeguards.ops.console.app import ConsoleConfig

    try:
        config = ConsoleConfig(args.region, database_url(args.region, args.database_url),
                               args.nats, args.partitions, list(args.gate_metrics),
                               args.secure_cookies)
    except SafeguardsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    anyio.run(serve_console, config, args.host, args.port)
    return 0


async def serve_console(config: Any, host: str, port: int) -> None:
    import anyio

    from safeguards.adapters.csp.serving import serving
    from safeguards.ops.console.app import build_console

    async with serving(build_console(config), host, port) as url:
        print(f"console of region {config.region} at {url}/ (sign in: safeguards "
              f"console-link NAME --region {config.region} --url {url})", flush=True)
        await anyio.sleep_forever()


def _link(args: argparse.Namespace) -> int:
    from safeguards.core.errors import InvalidInput
    from safeguards.ops.console.auth import make_token

    try:
        token = make_token(args.region, args.operator, time.time())
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.url.rstrip('/')}/login?token={urllib.parse.quote(token)}")
    return 0
