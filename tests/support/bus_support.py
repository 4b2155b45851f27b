"""Helpers for tests that drive a real NATS: publishing signals and waiting for an outcome."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import anyio
from nats.js import JetStreamContext

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.nats_auth import NatsIdentity
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.core.codec import encode_signal
from safeguards.core.events import Signal
from safeguards.core.subjects import inputs_subject


async def publish_signals(js: JetStreamContext, region: str, partitions: int,
                          signals: list[Signal]) -> None:
    """Each signal to its account's input subject, deduplicated by its id and signed with the
    region's producer key, as the region's gates and classifier publish them."""
    for s in signals:
        subject, data = inputs_subject(region, partitions, s.account_id), encode_signal(s)
        await js.publish(subject, data, headers=producer_headers(region, subject, data,
                                                                 s.signal_id), timeout=5)


def producer_headers(region: str, subject: str, data: bytes, msg_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": msg_id, **load_producer_keys(region).headers(subject, data)}


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> float:
    """Poll ``predicate`` until it holds; the seconds it took. Fails the test at the deadline."""
    start = anyio.current_time()
    with anyio.fail_after(timeout_s):
        while True:
            if predicate():
                return anyio.current_time() - start
            await anyio.sleep(0.05)


_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"')


async def refused_by_server(url: str, identity: NatsIdentity, *, publish: Iterable[str] = (),
                            subscribe: Iterable[str] = ()) -> set[tuple[str, str]]:
    """What a secured nats-server refused of these publishes and subscriptions made as
    ``identity``: ("publish" | "subscription", subject in lower case, as nats-py reports it)."""
    refused: set[tuple[str, str]] = set()

    async def on_error(exc: Exception) -> None:
        found = _VIOLATION.search(str(exc).lower())
        if found:
            refused.add((found.group(1), found.group(2)))

    nc = await connect(url, name=f"permissions-{identity.role}", once=True, identity=identity,
                       error_cb=on_error)
    try:
        for subject in subscribe:
            await nc.subscribe(subject)
        for subject in publish:
            await nc.publish(subject, b"x")
        await nc.flush()
        await anyio.sleep(0.3)  # the server's -ERR lines arrive after the flush's PONG
    finally:
        await nc.close()
    return refused
