"""The ``safeguards`` console command.

Each area registers its own subcommands (``register(subparsers)`` in the modules listed in
``COMMAND_MODULES``), so the operator CLI, the node runner, the classifier tools and the
simulations each live beside the code they drive.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

COMMAND_MODULES = (
    "safeguards.regions.cli",
    "safeguards.ops.cli",
    "safeguards.adapters.csp.cli",
    "safeguards.regions.node_cli",
    "safeguards.adapters.classifier.cli",
    "safeguards.simulations.cli",
    "safeguards.regions.stack_cli",
    "safeguards.ops.console.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safeguards", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    # Traces only where an OTLP endpoint is configured (``regions.tracing``); else nothing.
    from safeguards.regions.tracing import configure_from_environment

    traces = configure_from_environment(f"safeguards-{args.command}")
    try:
        return handler(args)
    finally:
        if traces is not None:
            traces.shutdown()  # exports the last spans


if __name__ == "__main__":
    sys.exit(main())
