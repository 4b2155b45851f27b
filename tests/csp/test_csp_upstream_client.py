"""The proxy's upstream client against the stand-in: keep-alive reuse, stale connections,
chunked streams, and typed failures."""

from __future__ import annotations

import json

import anyio
import pytest

from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.upstream import Script, UpstreamApp
from safeguards.adapters.csp.upstream_client import (
    UpstreamClient,
    UpstreamDisconnected,
    UpstreamUnavailable,
)
from safeguards.adapters.csp.wire import SseScanner
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


async def test_stand_in_model_time_varies_within_its_jitter() -> None:
    """``Script.latency_ms``: every completion (whole or streamed) waits within latency x (1 +-
    jitter) before its first byte, and the waits differ from request to request."""
    script = Script(latency_ms=60, latency_jitter=0.5)
    async with serving(UpstreamApp(script), "127.0.0.1", free_port(), lifespan="off") as url:
        client = UpstreamClient(url)
        try:
            took: list[float] = []
            for stream in (False, False, False, False, True):
                start = anyio.current_time()
                r = await client.post("/v1/messages", body("hi", stream=stream), HEADERS)
                await r.read()
                await r.aclose()
                assert r.status == 200
                took.append(anyio.current_time() - start)
            assert min(took) >= 0.030  # never under latency x (1 - jitter)
            assert len({round(t, 3) for t in took}) > 1
            start = anyio.current_time()  # a client-chosen model time overrides the script's
            r = await client.post("/v1/messages", body("hi #wait-us=120000"), HEADERS)
            await r.read()
            await r.aclose()
            assert anyio.current_time() - start >= 0.120
        finally:
            await client.aclose()
