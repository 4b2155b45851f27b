"""The proxy served over HTTP/1.1 (``serve_proxy``): uvicorn's httptools protocol, with each
response's head written together with its first body bytes.

uvicorn writes a response's status line and headers in one ``transport.write`` and its body in
another, so a client waiting on the proxy is woken twice per answer: once for a head it cannot
use yet, then for the body. On a loaded or virtualised machine each of those wake-ups costs tens
to hundreds of microseconds on the request's path. Here the head is held back until the next
write on the connection, which is the body in the same turn of the event loop (``respond``,
and a stream's first event once the upstream has sent it), or until the end of that turn
(``call_soon``): a streamed response whose first bytes come later gets its head as soon as
before, one loop turn later at most. Bytes are never reordered, dropped or delayed past the turn
that wrote them; a connection closed with a head held writes it first.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from safeguards.adapters.csp.caller_auth import NonceLedger
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.shared_rates import SharedRates
from safeguards.core.policy import Policy

_STATUS_LINE = b"HTTP/1.1 "  # how every head uvicorn writes begins (interim 100s included)
_STATUS_LINE_LEN = len(_STATUS_LINE)


class HeadHeldTransport:
    """A TCP transport whose status-line write waits for the next write (or the loop turn's
    end) so that both go out in one system call."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
        elif data[:_STATUS_LINE_LEN] == _STATUS_LINE:
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (the end of the turn that wrote it, or before a close)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    @property
    def holding(self) -> bool:
        return self._head is not None

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._head or b"")


class HeadHeldHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` writing through a ``HeadHeldTransport`` (its flow
    control keeps the socket's own transport: pausing is about the socket's buffer)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadHeldTransport(transport, self.loop)  # type: ignore[assignment]


# What the proxy's uvicorn server is configured with beyond the address (``serve_proxy``, and the
# tests' proxies, so they serve as production does).
PROXY_SERVER_OPTIONS: dict[str, Any] = {
    "http": HeadHeldHttpToolsProtocol, "proxy_headers": False, "date_header": False}


async def serve_proxy(config: ProxyConfig, policy: Policy, host: str, port: int, *,
                      sockets: list[socket.socket] | None = None,
                      rates: SharedRates | None = None, nonces: NonceLedger | None = None) -> None:
    """Serve on ``host:port``, or on ``sockets`` with the worker processes' shared ``rates``
    and ``nonces`` (``workers``)."""
    proxy = CspProxy(config, policy)
    proxy.gate.rates = rates
    if nonces is not None:
        proxy.caller_auth.nonces = nonces
    server_config = uvicorn.Config(proxy, host=host, port=port, log_level="warning",
                                   access_log=False, lifespan="on", loop="none",
                                   **PROXY_SERVER_OPTIONS)
    await uvicorn.Server(server_config).serve(sockets=sockets)
