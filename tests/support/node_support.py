"""A real account-actor node for CLI tests: it runs while the block runs, and the levels of the
enforcement commands it publishes are collected in order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.operators import OperatorRegistry, add_operator
from safeguards.core.codec import decode_command
from safeguards.core.ports import EventStore
from safeguards.regions.command_line import main


async def run_cli(*argv: str) -> int:
    """``safeguards ARGV...`` in a worker thread (the CLI runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


@contextlib.asynccontextmanager
async def running_node(nats_url: str, region: str, store: EventStore,
                       partitions: int) -> AsyncIterator[tuple[list[int], Client]]:
    """Yields the list the published commands' levels are appended to, and the connection
    that listens for them (for publishing signals). The region's operators: alice and bob
    (admins) and carol (analyst), registered in the test's state folder."""
    for name, role in (("alice", "admin"), ("bob", "admin"), ("carol", "analyst")):
        add_operator(region, name, role)
    node = Node(region=region, partitions=partitions, bus=NatsBus(nats_url, region), store=store,
                settings=NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2),
                static_partitions=range(partitions), operators=OperatorRegistry(region))
    levels: list[int] = []
    nc = await nats.connect(nats_url)

    async def on_command(msg: Msg) -> None:
        levels.append(decode_command(msg.data).level)

    await nc.subscribe(f"sg.{region}.enforce.>", cb=on_command)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            yield levels, nc
            node.request_stop()
    finally:
        await nc.drain()
