"""Leaving a server that is connected but cut off from its cluster's JetStream.

A client whose server is killed or paused notices (the socket closes, or pings go unanswered)
and reconnects to another server of the cluster. A client whose server is partitioned from the
others notices nothing: the server still answers pings, and even JetStream questions (a stream
leader cut off from its followers keeps answering ``stream_info`` from its own state until it
steps down), but nothing it is sent can be committed until the partition heals.
``watch_jetstream`` therefore makes a write that needs the cluster's quorum every
``interval_s`` (``quorum_write``: one tiny key in the region's lease bucket, expiring with the
bucket's TTL); after ``failures`` writes in a row fail while the connection believes itself
connected, it moves the connection to another server (nats-py's ``force_reconnect``;
subscriptions follow it). Failures count only once a write has succeeded (the bucket exists).

A leader election (the bucket's leader was on a server that died or stalled: 4 to 9 s) makes the
same write fail on every server, and a move then is worse than needless: it may land on the
server that stalled or is cut off, and stay there until the next streak of failures. So before
moving, the watch asks its server which servers it is routed to (the ``connect_urls`` of the
INFO a server sends every new connection, before any authentication): a server that names a
majority of the cluster is not cut off, and the connection stays, unless the writes keep failing
for longer than any election (``patience_s``: a partition whose routes have not timed out yet).
A server that sends no INFO in time (stalled) or names a minority is left at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

import anyio
import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]


def quorum_write(nc: Client, bucket: str, name: str, timeout_s: float = 0.75) -> Probe:
    """A probe that JetStream acknowledges only with its quorum: a put of ``watch.<name>`` in
    the KV bucket ``bucket`` (a raw publish to its subject; the bucket's TTL removes it)."""
    js = nc.jetstream(timeout=timeout_s)
    subject = f"$KV.{bucket}.watch.{re.sub(r'[^A-Za-z0-9_-]', '_', name)}"

    async def write() -> object:
        return await js.publish(subject, b"", timeout=timeout_s)

    return write


async def routed_servers(netloc: str, timeout_s: float = 0.75) -> list[str] | None:
    """The client URLs the server at ``host:port`` names in its INFO: itself and every server
    it has a route to. None when it sent no INFO within ``timeout_s`` (stalled, gone) or names
    none (``no_advertise``)."""
    host, _, port = netloc.rpartition(":")
    try:
        with anyio.fail_after(timeout_s):
            async with await anyio.connect_tcp(host.strip("[]"), int(port)) as stream:
                line = b""
                while b"\r\n" not in line and len(line) < 65536:
                    line += await stream.receive()
    except (TimeoutError, OSError, ValueError, anyio.EndOfStream):
        return None
    head = line.split(b"\r\n", 1)[0]
    if not head.startswith(b"INFO "):
        return None
    try:
        urls = json.loads(head[5:]).get("connect_urls")
    except ValueError:
        return None
    return [str(u) for u in urls] if isinstance(urls, list) and urls else None


async def _cut_off(nc: Client, largest: int) -> tuple[bool, int]:
    """Whether the connection's server looks cut off from its cluster (or stalled), and the
    largest cluster seen so far."""
    url = nc.connected_url
    if url is None:
        return True, largest
    view = await routed_servers(url.netloc)
    if view is None:
        return True, largest
    size = max(largest, len(nc.servers), len(view))
    return len(view) * 2 <= size, size


async def watch_jetstream(nc: Client, *, name: str, probe: Probe,
                          interval_s: float = 0.5, timeout_s: float = 0.75,
                          failures: int = 3, patience_s: float = 12.0) -> None:
    """Runs until cancelled; logs its moves. Only useful with several servers."""
    failed = 0
    failing_since = 0.0
    armed = False
    largest = 0
    while True:
        await anyio.sleep(interval_s)
        if not nc.is_connected:
            failed = 0  # nats-py is already finding another server
            continue
        try:
            with anyio.fail_after(timeout_s + 0.5):
                await probe()
            failed, armed = 0, True
        except (TimeoutError, nats.errors.Error, APIError) as exc:
            if not armed:
                continue
            failed += 1
            if failed == 1:
                failing_since = time.monotonic()
            if failed < failures:
                continue
            cut_off, largest = await _cut_off(nc, largest)
            if not cut_off and time.monotonic() - failing_since < patience_s:
                continue  # routed to a majority: an election; another server would not help
            log.warning("NATS connection %s: JetStream could not commit through its server "
                        "%d times (%s)%s; moving to another server", name, failed,
                        type(exc).__name__, "" if cut_off else " though it is routed")
            failed = 0
            try:
                await nc.force_reconnect()
            except nats.errors.Error as move:
                log.warning("NATS connection %s: could not move: %s", name,
                            type(move).__name__)
