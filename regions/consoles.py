"""The operators' consoles of a running stack: one per region, each over its own region's store
and NATS only (an EU operator signs in to the EU console; nothing of one region is served by
another's), with the region's inline proxy's metrics on its health page. ``safeguards run``
serves them beside the regions and prints their addresses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from safeguards.adapters.csp.serving import serving
from safeguards.adapters.embedded.ports import free_port
from safeguards.adapters.operators import OperatorRegistry, add_operator
from safeguards.ops.console.app import ConsoleConfig, build_console
from safeguards.regions.config import RegionConfig
from safeguards.regions.stack import HOST, StackEndpoints

LOCAL_ADMIN = "admin"


def ensure_local_admin(region: str) -> str | None:
    """On the embedded default only: a region with no operators gets one admin, ``admin``
    (its key in the state folder), so the console can be signed in to; returns the name made."""
    if OperatorRegistry(region).path.exists():
        return None
    add_operator(region, LOCAL_ADMIN, "admin")
    return LOCAL_ADMIN


@contextlib.asynccontextmanager
async def running_consoles(configs: list[RegionConfig], endpoints: StackEndpoints
                           ) -> AsyncIterator[dict[str, str]]:
    """Serve each region's console; yields region -> URL."""
    urls: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for cfg in configs:
            proxy = endpoints.regions.get(cfg.name)
            config = ConsoleConfig(cfg.name, cfg.database_url, cfg.nats_url, cfg.partitions,
                                   [f"{proxy.proxy_url}/metrics"] if proxy else [])
            urls[cfg.name] = await stack.enter_async_context(
                serving(build_console(config), HOST, free_port()))
        yield urls
