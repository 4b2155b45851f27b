"""Connecting to a region's NATS with bounded waits and unbounded reconnects.

A region's NATS is one server or a cluster: ``url`` may name several servers, comma-separated
(``nats://a:4222,nats://b:4222,nats://c:4222``); the connection starts on any of them and, when
its server goes (killed, paused past the ping deadline, partitioned), moves to another.

Which other: ``ServerRotation``, never the server just left while another has not been tried
since. nats-py's own choice shuffles the whole list, the server just left included; a paused
server still accepts TCP connections (the kernel does), so a move back to it waited out the whole
connect timeout before trying the next, while the partitions' leases ran out.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import nats
from nats.aio.client import Client, Server

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.nats_tls import client_tls

if TYPE_CHECKING:
    from safeguards.adapters.bus.nats_auth import NatsIdentity

log = logging.getLogger(__name__)

# each step of a connect (TCP, the server's INFO, TLS, PONG): a live server answers within
# milliseconds, and a paused one accepts the TCP connection but never sends INFO, so every
# second here is a second a move to another server can lose to it
CONNECT_TIMEOUT_S = 2.0


RECONNECT_WAIT_S = 0.25

Callback = Callable[..., Awaitable[None]]


class ServerRotation:
    """nats-py's ``reconnect_to_server_handler``: each attempt goes to the server tried longest
    ago (never tried first, ties at random), the one the connection is on or just tried counting
    as tried now; a server tried less than ``wait_s`` ago is waited for (every server failed)."""

    def __init__(self, wait_s: float = RECONNECT_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self._clock = clock
        self.current: str | None = None  # host:port of the server connected or being tried
        self._tried: dict[str, float] = {}

    def __call__(self, servers: list[Server], info: dict[str, Any]
                 ) -> tuple[Server | None, float]:
        now = self._clock()
        if self.current is not None:
            self._tried[self.current] = now  # left it, or it just failed: last in line
        if not servers:
            return None, self.wait_s
        never = float("-inf")
        candidates = random.sample(servers, len(servers))
        chosen = min(candidates, key=lambda s: self._tried.get(s.uri.netloc, never))
        last = self._tried.get(chosen.uri.netloc, never)
        self.current = chosen.uri.netloc
        return chosen, max(0.0, last + self.wait_s - now)


def server_urls(url: str) -> list[str]:
    """The servers ``url`` names (one, or several comma-separated: a cluster)."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise BusUnavailable("no NATS server named")
    return servers


async def connect(url: str, *, name: str, timeout_s: float = 15.0, once: bool = False,
                  error_cb: Callback | None = None, disconnected_cb: Callback | None = None,
                  reconnected_cb: Callback | None = None,
                  connect_timeout_s: float = CONNECT_TIMEOUT_S,
                  identity: NatsIdentity | None = None) -> Client:
    """The one way this project connects to NATS: a connection that keeps reconnecting after
    it was once established (``once``: a one-shot tool's, which gives up instead).

    The first connect is bounded by ``timeout_s``; after that nats-py reconnects forever and
    buffers publishes meanwhile (acks included), which is what the actors want through a server
    restart: every other await on the connection carries its own deadline. The callbacks replace
    the default one-line logging of errors and disconnects. ``identity``: the region role this
    connection authenticates as (``nats_auth``); None connects anonymously. TLS where the
    environment asks for it (``nats_tls``).
    """
    async def on_error(exc: Exception) -> None:
        # nats-py's default prints a traceback per failed reconnect attempt; one line will do.
        log.warning("NATS connection %s: %s", name, type(exc).__name__)

    async def on_disconnect() -> None:
        log.info("NATS connection %s: disconnected", name)

    async def on_reconnect() -> None:
        log.info("NATS connection %s: reconnected", name)

    servers = server_urls(url)
    auth: dict[str, Any] = {}
    if identity is not None:
        auth = {"nkeys_seed_str": identity.seed, "inbox_prefix": identity.inbox_prefix}
    tls = client_tls(servers[0])
    if tls is not None:
        auth["tls"] = tls
    rotation = ServerRotation()
    try:
        with anyio.fail_after(timeout_s):
            nc: Client = await nats.connect(
                servers,
                name=name,
                connect_timeout=connect_timeout_s,
                max_reconnect_attempts=0 if once else -1,
                reconnect_time_wait=RECONNECT_WAIT_S,
                reconnect_to_server_handler=rotation,
                allow_reconnect=not once,
                # a server that stops answering (SIGSTOP, a partition, a stalled VM) is
                # given up within ~4-6 s and the connection moves to another of the cluster
                ping_interval=2,
                max_outstanding_pings=2,
                pending_size=32 * 1024 * 1024,
                error_cb=error_cb or on_error,
                disconnected_cb=disconnected_cb or on_disconnect,
                reconnected_cb=reconnected_cb or on_reconnect,
                **auth,
            )
    except nats.errors.Error as exc:
        if "authorization" in str(exc).lower():
            who = repr(identity) if identity else "anonymously (no NATS key for this role)"
            raise BusUnavailable(f"NATS refused the connection {who}: authorization") from None
        raise BusUnavailable(f"cannot connect to NATS: {type(exc).__name__}") from None
    except (TimeoutError, OSError) as exc:
        raise BusUnavailable(f"cannot connect to NATS: {type(exc).__name__}") from None
    if nc.connected_url is not None:
        rotation.current = nc.connected_url.netloc
    return nc
