"""``safeguards run``: the whole service on its embedded default."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from safeguards.regions.config import DEFAULT_REGIONS


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run the service on its embedded default (Ctrl-C stops)")
    run.add_argument("--data-dir", type=Path, default=Path("var"),
                     help="where the embedded servers keep their data (default: ./var)")
    run.add_argument("--regions", default=",".join(DEFAULT_REGIONS),
                     help="comma-separated region names (default: us,eu)")
    run.add_argument("--nats-servers", type=int, choices=(1, 3), default=1,
                     help="1 (default): one nats-server for every region (regions on it serve "
                          "each other's accounts); 3: a three-node JetStream cluster per region, "
                          "R3 streams fsynced before every ack")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import anyio

    from safeguards.regions.embedded import run_embedded

    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(run_embedded, args.data_dir.resolve(), regions, args.nats_servers)
    return 0
