"""A lean HTTP/1.1 load generator for the proxy benchmark, run as its own process.

    python benchmarks/loadgen.py URL CONCURRENCY REQUESTS [--stream]

A general-purpose client (httpx) spends several hundred microseconds of Python per request, so
at 16 or 64 clients on a small machine it becomes the bottleneck it is meant to measure around.
This one keeps ``CONCURRENCY`` keep-alive connections (asyncio protocols on uvloop), writes each
pre-formatted request in one call and finds the end of each response from its content-length
(or, streaming, the final chunk), so the client's own cost stays in the tens of microseconds.
Each connection's first three requests open the path (client -> proxy -> upstream) and are not
timed. Output: one JSON line, ``{"samples_ms": [...], "cpu_s": ..., "wall_s": ...}``; with
``--stream`` the samples are the time to the first ``content_block_delta`` byte.

``--front-end bedrock|vertex`` sends the same request in Amazon Bedrock's shape
(``/model/{id}/invoke``, AWS event-stream when streaming) or Google Vertex AI's
(``:rawPredict`` / ``:streamRawPredict``) instead of the Messages API's.

``--sign KID:HEX`` adds the front door's signed caller assertion to each request (computed
before the request's clock starts; the proxy's verification is part of what is measured).

``--model-ms M`` gives every request a model time drawn uniformly from [M/2, 3M/2] (seeded per
client, so a direct run and a proxied run draw the same sequence), asked of the stand-in with a
``x-stand-in-wait-us: N`` header (not a directive in the prompt: the gate screens the prompt,
and the benchmark's prompt is the same whatever the model time); each sample is then the
request's latency minus the time it asked the model to take: what the path, not the model,
cost. Closed-loop clients stay out of lockstep.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import time
from typing import cast
from urllib.parse import urlsplit

from safeguards.adapters.csp.caller_auth import CallerKey, assertion

# A prompt the screening cascade's first stage clears (checked in benchmarks/proxy.py): a fresh
# account's benign request as most are served, without waiting on the classifier.
PROMPT = "What is a good recipe for banana bread with walnuts?"


FRONT_ENDS = ("messages", "bedrock", "vertex")
_VERTEX = ("/v1/projects/sg-bench-project/locations/us-east5/publishers/anthropic/models/"
           "claude-bench")
# a Bedrock stream's first delta: a chunk frame whose base64 JSON starts with this event type
_BEDROCK_DELTA = base64.b64encode(b'{"type":"content_block_delta"'[:27])


def request_path(front_end: str, streaming: bool) -> bytes:
    if front_end == "bedrock":
        return b"/model/claude-bench/" + (b"invoke-with-response-stream" if streaming
                                          else b"invoke")
    if front_end == "vertex":
        return (_VERTEX + (":streamRawPredict" if streaming else ":rawPredict")).encode()
    return b"/v1/messages"


def request_body(streaming: bool, wait_us: int = 0, prompt: str = PROMPT,
                 front_end: str = "messages") -> bytes:
    """A request in ``front_end``'s shape; ``wait_us`` asks the stand-in for that much model
    time."""
    text = prompt + (f" #wait-us={wait_us}" if wait_us else "")
    doc: dict[str, object] = {"max_tokens": 64,
                              "messages": [{"role": "user", "content": text}]}
    if front_end == "bedrock":
        doc["anthropic_version"] = "bedrock-2023-05-31"
    elif front_end == "vertex":
        doc.update(anthropic_version="vertex-2023-10-16", stream=streaming)
    else:
        doc.update(model="claude-bench", stream=streaming)
    return json.dumps(doc).encode()

WARMUP = 3


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends and waits for the whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.done: asyncio.Future[int] | None = None
        self.first_delta: float | None = None
        self.streaming = False
        self.lost: BaseException | None = None
        self.delta_marker = b"content_block_delta"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        if self.done is not None and not self.done.done():
            self.done.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if self.streaming:
            if self.first_delta is None and self.delta_marker in buf:
                self.first_delta = time.perf_counter()
            if buf.endswith(b"0\r\n\r\n"):
                self._finish()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        start = buf.find(b"content-length:", 0, end)
        if start < 0:
            start = buf.find(b"Content-Length:", 0, end)
        if start < 0:
            raise RuntimeError("a response without content-length")
        line_end = buf.find(b"\r\n", start)
        length = int(buf[start + 15:line_end])
        if len(buf) >= end + 4 + length:
            self._finish()

    def _finish(self) -> None:
        status = int(self.buffer[9:12])
        self.buffer.clear()
        if self.done is not None and not self.done.done():
            self.done.set_result(status)

    async def request(self, data: bytes, *, streaming: bool = False) -> int:
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.streaming = streaming
        self.first_delta = None
        self.transport.write(data)
        return await self.done


def request_bytes(host: str, account: int, body: bytes, key: CallerKey | None = None,
                  path: bytes = b"/v1/messages", wait_us: int = 0) -> bytes:
    # each request from its own account, so tier 0's 600 requests/minute never bind; signed as
    # the provider's front door signs (the caller assertion) when a key is given
    name = f"bench-{account % 50_000}"
    proof = b"" if key is None else (
        b"\r\nx-csp-caller-assertion: "
        + assertion(key, method="POST", target=path.decode("latin-1"), account=name, body=body,
                    now=time.time()).encode())
    return (b"POST " + path + b" HTTP/1.1\r\nhost: " + host.encode()
            + b"\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
            b"x-api-key: bench\r\nx-csp-account-id: " + name.encode() + proof
            + (b"\r\nx-stand-in-wait-us: " + str(wait_us).encode() if wait_us else b"")
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def run(url: str, concurrency: int, total: int, streaming: bool,
              account_base: int, model_ms: float = 0.0, prompt: str = PROMPT,
              key: CallerKey | None = None, front_end: str = "messages") -> list[float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    netloc = parts.netloc
    loop = asyncio.get_running_loop()
    body = request_body(streaming, prompt=prompt, front_end=front_end)
    path = request_path(front_end, streaming)
    counter = iter(range(account_base, account_base + 10**8))
    samples: list[float] = []
    per_client = max(1, total // concurrency)

    async def one_client(index: int) -> None:
        rng = random.Random(index)
        _, conn = await loop.create_connection(Connection, host, port)
        if front_end == "bedrock":
            conn.delta_marker = _BEDROCK_DELTA
        try:
            for i in range(WARMUP + per_client):
                wait_us = round(model_ms * 1000 * rng.uniform(0.5, 1.5)) if model_ms > 0 else 0
                wait_s = wait_us / 1e6
                data = request_bytes(netloc, next(counter), body, key, path, wait_us)
                t0 = time.perf_counter()
                status = await asyncio.wait_for(conn.request(data, streaming=streaming), 30)
                t1 = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"status {status} from {url}")
                if i < WARMUP:
                    continue
                if streaming:
                    if conn.first_delta is None:
                        raise RuntimeError(f"no content_block_delta from {url}")
                    samples.append(conn.first_delta - t0 - wait_s)
                else:
                    samples.append(t1 - t0 - wait_s)
        finally:
            if conn.transport is not None:
                conn.transport.close()

    await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("requests", type=int)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--account-base", type=int, default=0)
    parser.add_argument("--model-ms", type=float, default=0.0)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--sign", metavar="KID:HEX", help="sign each request with this caller key")
    parser.add_argument("--front-end", choices=FRONT_ENDS, default="messages")
    args = parser.parse_args()
    key = None
    if args.sign:
        kid, secret = args.sign.split(":", 1)
        key = CallerKey(kid, bytes.fromhex(secret))
    t0, c0 = time.perf_counter(), time.process_time()
    work = run(args.url, args.concurrency, args.requests, args.stream, args.account_base,
               args.model_ms, args.prompt, key, args.front_end)
    try:
        import uvloop

        samples = uvloop.run(work)
    except ImportError:
        samples = asyncio.run(work)
    print(json.dumps({"samples_ms": [round(s * 1e3, 4) for s in samples],
                      "cpu_s": round(time.process_time() - c0, 4),
                      "wall_s": round(time.perf_counter() - t0, 4),
                      "pid": os.getpid()}))


if __name__ == "__main__":
    main()
