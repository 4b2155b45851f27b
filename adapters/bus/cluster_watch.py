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
A leader election makes the same write fail for a few seconds: a needless move costs one
reconnect.
"""

from __future__ import annotations

import logging
import re
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


async def watch_jetstream(nc: Client, *, name: str, probe: Probe,
                          interval_s: float = 0.5, timeout_s: float = 0.75,
                          failures: int = 3) -> None:
    """Runs until cancelled; logs its moves. Only useful with several servers."""
    failed = 0
    armed = False
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
            if failed >= failures:
                log.warning("NATS connection %s: JetStream could not commit through its "
                            "server %d times (%s); moving to another server", name, failed,
                            type(exc).__name__)
                failed = 0
                try:
                    await nc.force_reconnect()
                except nats.errors.Error as move:
                    log.warning("NATS connection %s: could not move: %s", name,
                                type(move).__name__)
