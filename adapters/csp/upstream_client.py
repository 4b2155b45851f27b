"""A lean, pooled HTTP/1.1 client for the proxy's one upstream.

The proxy's budget is a millisecond, and on loopback most of a general-purpose client's cost is
Python bookkeeping and extra write calls. This client keeps a pool of keep-alive connections to a
single origin (idle ones retire before the upstream's keep-alive timeout; a request that meets a
connection the upstream already closed is retried once on a fresh one), writes each request in
one ``write`` (head and body together), parses responses with ``httptools`` (content-length and
chunked alike) in an asyncio protocol (no stream wrapper, no per-read cancel scope: one deadline
timer per wait) and hands the body back whole or as it arrives (SSE), pausing reads while a slow
client leaves too much of it buffered. Every network wait has a
deadline. Failures are typed: the proxy maps them to Anthropic-shaped 502/504 errors, and none
carries request or response content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from safeguards.core.errors import SafeguardsError

_HIGH_WATER = 256 * 1024  # body bytes buffered from the upstream before we stop reading


class UpstreamError(SafeguardsError):
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """No connection could be made, or the upstream closed it before answering."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer (or went silent mid-body) within the read deadline."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection in the middle of a response body."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes were not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: an asyncio protocol feeding httptools, no task of its own.

    The request's task writes the request and awaits ``progress`` (a future the protocol
    resolves when headers, body bytes, the end of the message or the end of the connection
    arrive), so a response costs a few callbacks and no per-read timers beyond one deadline."""

    __slots__ = ("body", "buffered", "closed", "complete", "error", "got_bytes", "headers",
                 "headers_done", "keep_alive", "parser", "paused", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.headers_done = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.paused = False

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers = {}
        self.headers_done = False
        self.body = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = UpstreamProtocolError("the upstream tried to upgrade the connection")
        except httptools.HttpParserError as exc:
            self.error = UpstreamProtocolError(
                f"invalid HTTP from the upstream ({type(exc).__name__})")
        if self.error is not None and self.transport is not None:
            self.transport.close()
        elif self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # --- httptools callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # httptools forgets keep-alive once the message is done: read it while it knows.
        self.keep_alive = self.parser.should_keep_alive()

    # --- waiting ---

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_body(self) -> list[bytes]:
        pending, self.body, self.buffered = self.body, [], 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return pending

    async def progress(self, timeout_s: float, message: str) -> None:
        """Wait until the protocol has something new (or the deadline passes)."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        except UpstreamTimeout:
            raise UpstreamTimeout(message) from None
        finally:
            timer.cancel()
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("deadline"))


class UpstreamResponse:
    def __init__(self, client: UpstreamClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status: int = conn.parser.get_status_code()
        self.headers = conn.headers
        self._closed = False

    @property
    def content_type(self) -> str:
        return self.headers.get(b"content-type", b"").decode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (already de-chunked)."""
        conn = self._conn
        while True:
            if conn.body:
                for piece in conn.take_body():
                    yield piece
                continue  # more may have arrived while the consumer had the last piece
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            if conn.closed:
                raise UpstreamDisconnected("the upstream closed the connection mid-body")
            await conn.progress(self._client.read_timeout_s,
                                "the upstream did not answer in time")

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            if conn.error is not None:
                raise conn.error
            if conn.closed:
                raise UpstreamDisconnected("the upstream closed the connection mid-body")
            await conn.progress(self._client.read_timeout_s,
                                "the upstream did not answer in time")
        pieces = conn.take_body()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        client = self._client
        if (conn.complete and conn.keep_alive and not conn.closed and conn.error is None
                and len(client._idle) < client.pool_size):
            client._idle.append((conn, time.monotonic()))
        else:
            conn.close()


class UpstreamClient:
    def __init__(self, base_url: str, *, pool: int = 256, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 120.0, max_idle_s: float = 4.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the upstream must be an http:// URL (TLS ends before the proxy)")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/").encode("latin-1")
        self._host_header = (parts.netloc or self.host).encode("latin-1")
        self.pool_size = pool
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_s = max_idle_s
        self._idle: list[tuple[_Connection, float]] = []
        self.connections_opened = 0

    async def post(self, path: str, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> UpstreamResponse:
        return await self.request(b"POST", path.encode("latin-1"), body, headers)

    async def request(self, method: bytes, target: bytes, body: bytes,
                      headers: list[tuple[bytes, bytes]]) -> UpstreamResponse:
        """Send one request (``target``: path and query) and wait for the response's head."""
        head = [method, b" ", self.prefix, target, b" HTTP/1.1\r\nhost: ", self._host_header]
        if body or method != b"GET":
            head += (b"\r\ncontent-length: ", str(len(body)).encode())
        head.append(b"\r\n")
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"\r\n", body)
        data = b"".join(head)
        for attempt in (0, 1):
            conn, reused = await self._acquire(fresh=attempt > 0)
            conn.reset()
            try:
                assert conn.transport is not None
                conn.transport.write(data)
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    if conn.closed:
                        raise UpstreamUnavailable("the upstream closed the connection")
                    await conn.progress(self.read_timeout_s,
                                        "the upstream did not answer in time")
            except UpstreamUnavailable:
                conn.close()
                if reused and attempt == 0 and not conn.got_bytes:
                    continue  # a keep-alive connection the upstream had already closed
                raise
            except BaseException:
                conn.close()
                raise
            return UpstreamResponse(self, conn)
        raise UpstreamUnavailable("the upstream closed the connection")  # pragma: no cover

    async def _acquire(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            conn, idle_since = self._idle.pop()
            if not conn.closed and now - idle_since < self.max_idle_s:
                return conn, True
            conn.close()  # the upstream may have closed it by now
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port),
                self.connect_timeout_s)
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamUnavailable(
                f"cannot connect to the upstream ({type(exc).__name__})") from None
        self.connections_opened += 1
        return conn, False

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()
