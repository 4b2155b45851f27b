"""Riding through a JetStream leader election: which failures a retry can help, and retrying.

While a cluster elects a new stream or meta leader (its leader was killed, paused or cut off),
JetStream API calls time out, find no responders or answer 503 / "JetStream system temporarily
unavailable" for a few seconds; an R3 create answers "insufficient resources" while one of the
three servers is away. A publish to a stream just made on a cluster (a KV put included) finds
no responders (``NoStreamResponseError``) until its server is known across the routes. Those
are worth retrying within a deadline; anything else is an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import nats.errors
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from safeguards.adapters.bus.errors import BusUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

JS_TEMPORARILY_UNAVAILABLE = 10008
JS_INSUFFICIENT_RESOURCES = 10023
JS_CLUSTER_NOT_AVAILABLE = 10006  # "JetStream system temporarily unavailable" in older servers
JS_NO_LEADER = 10003  # "JetStream cluster not available" / no leader for the asset
_TRANSIENT_CODES = frozenset({JS_TEMPORARILY_UNAVAILABLE, JS_INSUFFICIENT_RESOURCES,
                              JS_CLUSTER_NOT_AVAILABLE, JS_NO_LEADER})


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the same JetStream call can succeed once the cluster settles."""
    if isinstance(exc, ServiceUnavailableError):
        return True
    if isinstance(exc, APIError):
        return exc.err_code in _TRANSIENT_CODES or exc.code == 503
    return isinstance(exc, TimeoutError | nats.errors.TimeoutError | nats.errors.NoRespondersError
                      | NoStreamResponseError | nats.errors.ConnectionReconnectingError)


async def retry_transient(call: Callable[[], Awaitable[T]], what: str, *,
                          deadline_s: float = 30.0, attempt_s: float = 5.0) -> T:
    """``call()`` until it returns or fails for good; transient failures are retried with a
    growing pause until ``deadline_s``, then reported as ``BusUnavailable``."""
    pause = 0.1
    start = anyio.current_time()
    while True:
        try:
            with anyio.fail_after(attempt_s):
                return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if anyio.current_time() - start + pause > deadline_s:
                raise BusUnavailable(f"{what}: {type(exc).__name__} for {deadline_s:.0f}s "
                                     "(the cluster has no leader?)") from None
            log.info("%s: %s, retrying (a leader election?)", what, type(exc).__name__)
            await anyio.sleep(pause)
            pause = min(pause * 2, 2.0)
