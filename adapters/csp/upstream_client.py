"""A lean, pooled HTTP/1.1 client for the proxy's one upstream.

The proxy's budget is a millisecond, and on loopback most of a general-purpose client's cost is
Python bookkeeping and extra write calls. This client keeps a pool of keep-alive connections to a
single origin (idle ones retire before the upstream's keep-alive timeout; a request that meets a
connection the upstream already closed is retried once on a fresh one), writes each request in
one ``send`` (head and body together), parses responses with ``httptools`` (content-length and
chunked alike) and hands the body back whole or as it arrives (SSE). Every network wait has a
deadline. Failures are typed: the proxy maps them to Anthropic-shaped 502/504 errors, and none
carries request or response content.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import httptools
from anyio.abc import SocketStream

from safeguards.core.errors import SafeguardsError

_READ = 65536


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


class _Parsed:
    """httptools callbacks for one response."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.headers_done = False
        self.body: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # httptools forgets keep-alive once the message is done: read it while it knows.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class UpstreamResponse:
    def __init__(self, client: UpstreamClient, stream: SocketStream,
                 parser: httptools.HttpResponseParser, parsed: _Parsed) -> None:
        self._client = client
        self._stream = stream
        self._parser = parser
        self._parsed = parsed
        self.status: int = parser.get_status_code()
        self.headers = parsed.headers
        self._closed = False

    @property
    def content_type(self) -> str:
        return self.headers.get(b"content-type", b"").decode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (already de-chunked)."""
        parsed = self._parsed
        while True:
            if parsed.body:
                pending, parsed.body = parsed.body, []
                for piece in pending:
                    yield piece
            if parsed.complete:
                return
            await self._client._receive_into(self._stream, self._parser, mid_body=True)

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if (self._parsed.complete and self._parsed.keep_alive
                and len(self._client._idle) < self._client.pool_size):
            self._client._idle.append((self._stream, time.monotonic()))
        else:
            await self._client._discard(self._stream)


class UpstreamClient:
    def __init__(self, base_url: str, *, pool: int = 256, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 120.0, max_idle_s: float = 4.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the upstream must be an http:// URL (TLS ends before the proxy)")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._host_header = (parts.netloc or self.host).encode("latin-1")
        self.pool_size = pool
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_s = max_idle_s
        self._idle: list[tuple[SocketStream, float]] = []
        self.connections_opened = 0

    async def post(self, path: str, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> UpstreamResponse:
        head = [b"POST ", self.prefix.encode("latin-1"), path.encode("latin-1"),
                b" HTTP/1.1\r\nhost: ", self._host_header,
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        request = b"".join(head) + body
        for attempt in (0, 1):
            stream, reused = await self._acquire(fresh=attempt > 0)
            parser_state = _Parsed()
            parser = httptools.HttpResponseParser(parser_state)
            parser_state.parser = parser
            try:
                try:
                    await stream.send(request)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    raise UpstreamUnavailable("the upstream closed the connection") from None
                while not parser_state.headers_done:
                    await self._receive_into(stream, parser, mid_body=False)
            except UpstreamUnavailable:
                await self._discard(stream)
                if reused and attempt == 0:
                    continue  # a keep-alive connection the upstream had already closed
                raise
            except BaseException:
                await self._discard(stream)
                raise
            return UpstreamResponse(self, stream, parser, parser_state)
        raise UpstreamUnavailable("the upstream closed the connection")  # pragma: no cover

    async def _acquire(self, *, fresh: bool = False) -> tuple[SocketStream, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            stream, idle_since = self._idle.pop()
            if now - idle_since < self.max_idle_s:
                return stream, True
            await self._discard(stream)  # the upstream may have closed it by now
        try:
            with anyio.fail_after(self.connect_timeout_s):
                stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamUnavailable(
                f"cannot connect to the upstream ({type(exc).__name__})") from None
        self.connections_opened += 1
        return stream, False

    async def _receive_into(self, stream: SocketStream, parser: httptools.HttpResponseParser,
                            *, mid_body: bool) -> None:
        try:
            with anyio.fail_after(self.read_timeout_s):
                data = await stream.receive(_READ)
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            if mid_body:
                raise UpstreamDisconnected("the upstream closed the connection mid-body") from None
            raise UpstreamUnavailable("the upstream closed the connection") from None
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise UpstreamProtocolError(f"invalid HTTP from the upstream ({type(exc).__name__})"
                                        ) from None

    async def _discard(self, stream: SocketStream) -> None:
        with anyio.move_on_after(1.0, shield=True):
            await stream.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for stream, _ in idle:
            await self._discard(stream)
