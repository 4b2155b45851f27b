"""The proxy's upstream client against the stand-in: keep-alive reuse, stale connections,
chunked streams, and typed failures."""

from __future__ import annotations

import json

import anyio
import pytest

from safeguards.adapters.csp.messages_api import SseScanner
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.csp.upstream_client import (
    UpstreamClient,
    UpstreamDisconnected,
    UpstreamUnavailable,
)
from safeguards.adapters.embedded import free_port

HEADERS = [(b"content-type", b"application/json")]


def body(content: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "m", "max_tokens": 5, "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()


async def test_reuse_stale_retry_chunked_and_typed_failures() -> None:
    async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off",
                       timeout_keep_alive=1) as url:
        client = UpstreamClient(url, max_idle_s=60)  # trusts idle connections longer than
        try:                                          # the server keeps them
            for _ in range(3):
                r = await client.post("/v1/messages", body("hi"), HEADERS)
                assert r.status == 200 and json.loads(await r.read())["type"] == "message"
                await r.aclose()
            assert client.connections_opened == 1
            await anyio.sleep(1.5)  # the server closes the idle connection
            r = await client.post("/v1/messages", body("hi"), HEADERS)
            assert r.status == 200
            await r.aclose()
            assert client.connections_opened == 2  # retried once on a fresh connection

            r = await client.post("/v1/messages", body("#reply-chars=500", stream=True), HEADERS)
            assert r.content_type.startswith("text/event-stream")
            scanner = SseScanner()
            async for chunk in r.chunks():
                scanner.feed(chunk)
            await r.aclose()
            assert scanner.text_chars == 500 and scanner.output_tokens == 125

            r = await client.post("/v1/messages",
                                  body("#reply-chars=500 #disconnect-after=100", stream=True),
                                  HEADERS)
            with pytest.raises(UpstreamDisconnected):
                async for _ in r.chunks():
                    pass
            await r.aclose()

            r = await client.post("/v1/messages", body("#status=529"), HEADERS)
            assert r.status == 529
            assert json.loads(await r.read())["error"]["type"] == "overloaded_error"
            await r.aclose()
        finally:
            await client.aclose()
    refused = UpstreamClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamUnavailable):
        await refused.post("/v1/messages", body("hi"), HEADERS)
    with pytest.raises(ValueError, match="http://"):
        UpstreamClient("https://example.invalid")


async def test_stand_in_takes_the_model_time_the_client_asks_for() -> None:
    """``#wait-us=N``: the completion (whole or streamed) waits N microseconds before its first
    byte; without the directive it answers at once."""
    async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as url:
        client = UpstreamClient(url)
        try:
            for stream in (False, True):
                for wait_us, low, high in ((0, 0.0, 0.1), (120_000, 0.120, 1.0)):
                    directive = f" #wait-us={wait_us}" if wait_us else ""
                    start = anyio.current_time()
                    r = await client.post("/v1/messages", body("hi" + directive, stream=stream),
                                          HEADERS)
                    await r.read()
                    await r.aclose()
                    assert r.status == 200
                    assert low <= anyio.current_time() - start < high
        finally:
            await client.aclose()
