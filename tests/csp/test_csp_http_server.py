"""The proxy's server protocol writes a response's head with its first body bytes (one system
call, one wake-up of the client), never reorders or loses bytes, and a lone head still goes out
at the end of the loop turn that wrote it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from safeguards.adapters.csp.http_server import PROXY_SERVER_OPTIONS, HeadHeldTransport
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.embedded.ports import free_port

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """The calls a socket transport would have turned into system calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(bytes(d) for d in list_of_data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted


async def test_a_head_goes_out_with_the_body_in_one_write() -> None:
    raw = RecordingTransport()
    held = HeadHeldTransport(raw, asyncio.get_running_loop())
    held.write(HEAD)
    assert raw.calls == [] and held.holding
    held.write(b"hello")
    assert raw.calls == [HEAD + b"hello"]
    held.write(b"more")  # nothing is held once the head is out
    assert raw.calls == [HEAD + b"hello", b"more"]
    await asyncio.sleep(0)
    assert raw.calls == [HEAD + b"hello", b"more"]  # the turn's flush finds nothing to write


async def test_a_lone_head_is_written_at_the_end_of_its_loop_turn() -> None:
    raw = RecordingTransport()
    held = HeadHeldTransport(raw, asyncio.get_running_loop())
    held.write(HEAD)  # a stream's head, its first event still to come from the upstream
    await asyncio.sleep(0)
    assert raw.calls == [HEAD] and not held.holding
    held.write(b"data: {}\n\n")
    assert raw.calls == [HEAD, b"data: {}\n\n"]


async def test_closing_writes_a_held_head_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    raw = RecordingTransport()
    held = HeadHeldTransport(raw, loop)
    held.write(HEAD)
    held.close()
    assert raw.calls == [HEAD] and raw.closed
    aborted = RecordingTransport()
    held = HeadHeldTransport(aborted, loop)
    held.write(HEAD)
    held.abort()
    await asyncio.sleep(0)
    assert aborted.calls == [] and aborted.aborted


async def test_body_bytes_that_look_like_a_status_line_keep_their_order() -> None:
    raw = RecordingTransport()
    held = HeadHeldTransport(raw, asyncio.get_running_loop())
    held.write(HEAD)
    held.write(b"HTTP/1.1 is how this body starts")
    held.write(b"HTTP/1.1 again")  # held until the turn ends (or the next write), in order
    held.write(b"!")
    await asyncio.sleep(0)
    assert b"".join(raw.calls) == (HEAD + b"HTTP/1.1 is how this body starts"
                                   + b"HTTP/1.1 again!")


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.sleep(0.05)  # the upstream's first event comes later: the head must not wait
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def exchange(port: int, request: bytes, done: Any) -> bytes:
    """What the server sends back on one connection until ``done(received)`` holds."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        got = b""
        while not done(got):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


async def test_the_proxys_server_answers_keep_alive_requests_and_streams_through_it() -> None:
    port = free_port()
    async with serving(echo_app, "127.0.0.1", port, lifespan="off", **PROXY_SERVER_OPTIONS):
        body = b'{"x": 1}'
        request = (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" %
                   (len(body), body))
        got = await asyncio.to_thread(exchange, port, request * 2,
                                      lambda got: got.count(body) == 2)
        first, second = got.split(b"HTTP/1.1 200 OK\r\n")[1:]  # two answers on one connection
        for answer in (first, second):  # each whole, its head before its body
            assert b"content-length: 8\r\n" in answer and answer.endswith(b"\r\n\r\n" + body)
        # a stream's head is sent before its first event, which the app sends 50 ms later
        head = await asyncio.to_thread(exchange, port,
                                       b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n",
                                       lambda got: b"\r\n\r\n" in got)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"data: 1" not in head
