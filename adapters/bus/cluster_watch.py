"""Leaving a server that is connected but cut off from its cluster's JetStream.

A client whose server is killed or paused notices (the socket closes, or pings go unanswered)
and reconnects to another server of the cluster. A client whose server is partitioned from the
others notices nothing: the server still answers pings, but every JetStream call through it
times out or finds no responders until the partition heals. ``watch_jetstream`` asks the
cluster a cheap question (``$JS.API.INFO``, which every role may ask) every ``interval_s``; after
``failures`` answers in a row fail while the connection believes itself connected, it moves the
connection to another server (nats-py's ``force_reconnect``; subscriptions follow it). A leader
election makes the same question fail for a few seconds: the threshold is set past that, and a
needless move costs one reconnect.
"""

from __future__ import annotations

import logging

import anyio
import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError

log = logging.getLogger(__name__)


async def watch_jetstream(nc: Client, *, name: str, interval_s: float = 1.0,
                          timeout_s: float = 1.5, failures: int = 4) -> None:
    """Runs until cancelled; counts its moves in the log. Only useful with several servers."""
    js = nc.jetstream(timeout=timeout_s)
    failed = 0
    while True:
        await anyio.sleep(interval_s)
        if not nc.is_connected:
            failed = 0  # nats-py is already finding another server
            continue
        try:
            with anyio.fail_after(timeout_s + 0.5):
                await js.account_info()
            failed = 0
        except (TimeoutError, nats.errors.Error, APIError) as exc:
            failed += 1
            if failed >= failures:
                log.warning("NATS connection %s: JetStream unanswered through its server "
                            "%d times (%s); moving to another server", name, failed,
                            type(exc).__name__)
                failed = 0
                try:
                    await nc.force_reconnect()
                except nats.errors.Error as move:
                    log.warning("NATS connection %s: could not move: %s", name,
                                type(move).__name__)
