"""Bad input and upstream failures: Anthropic-shaped errors, no crash, no text in logs or errors."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

import anthropic
import httpx
import pytest
from csp_testkit import Region, RunningProxy

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
CANARY = "CANARY-7f3a9c-do-not-log"
MODEL = "claude-test-1"
HEADERS = {"x-csp-account-id": "acct-bad-input", "content-type": "application/json",
           "anthropic-version": "2023-06-01"}


def server_side_log(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged except by the SDK under test (which logs its own requests at DEBUG)."""
    return "\n".join(r.getMessage() for r in caplog.records
                     if not r.name.startswith(("anthropic", "httpx2", "httpcore2")))


def assert_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status
    doc = response.json()
    assert doc["type"] == "error" and doc["error"]["type"] == kind
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    assert CANARY not in response.text


async def test_bad_requests_get_anthropic_errors_without_echoing_text(
    proxy_env: ProxyEnv, region: Region, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with proxy_env(max_body_bytes=64 * 1024) as rp, httpx.AsyncClient(
            base_url=rp.url) as http:
        url = "/v1/messages"
        good = {"model": MODEL, "max_tokens": 5,
                "messages": [{"role": "user", "content": CANARY}]}
        assert_error(await http.post(url, content=b"{" + CANARY.encode(), headers=HEADERS),
                     400, "invalid_request_error")
        assert_error(await http.post(url, content=json.dumps([CANARY]), headers=HEADERS),
                     400, "invalid_request_error")
        assert_error(await http.post(url, content=json.dumps({"model": MODEL, "messages": [
            {"role": "user", "content": 5}], "note": CANARY}), headers=HEADERS),
            400, "invalid_request_error")
        assert_error(await http.post(url, content=b"\xff\xfe" + CANARY.encode(), headers=HEADERS),
                     400, "invalid_request_error")
        no_account = {k: v for k, v in HEADERS.items() if k != "x-csp-account-id"}
        assert_error(await http.post(url, json=good, headers=no_account),
                     401, "authentication_error")
        for bad in ("has space", "x" * 200, ""):
            assert_error(await http.post(url, json=good,
                                         headers={**HEADERS, "x-csp-account-id": bad}),
                         400, "invalid_request_error")
        huge = {**good, "messages": [{"role": "user", "content": CANARY * 5000}]}
        assert_error(await http.post(url, json=huge, headers=HEADERS), 413, "request_too_large")

        async def chunked() -> object:
            for _ in range(100):
                yield (CANARY * 100).encode()
        assert_error(await http.post(url, content=chunked(), headers=HEADERS),  # type: ignore[arg-type]
                     413, "request_too_large")
        assert_error(await http.get(url, headers=HEADERS), 405, "invalid_request_error")
        assert_error(await http.post("/v1/other", json=good, headers=HEADERS),
                     404, "not_found_error")
        # the proxy still serves after all of that
        ok = await http.post(url, json=good, headers=HEADERS)
        assert ok.status_code == 200 and ok.json()["stop_reason"] == "end_turn"
        metrics = (await http.get("/metrics")).text
        assert 'safeguards_csp_bad_requests_total{status="413"} 2.0' in metrics
    assert CANARY not in server_side_log(caplog)


async def test_upstream_failures_keep_anthropic_shape_and_no_text(
    proxy_env: ProxyEnv, region: Region, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as rp:
        sdk = anthropic.AsyncAnthropic(base_url=rp.url, api_key="sk-test", max_retries=0,
                                       default_headers={"x-csp-account-id": "acct-up"})
        with pytest.raises(anthropic.InternalServerError) as failed:
            await sdk.messages.create(model=MODEL, max_tokens=5, messages=[
                {"role": "user", "content": f"{CANARY} #status=500"}])
        assert failed.value.status_code == 500
        assert CANARY not in str(failed.value.body)
        # echo: the completion carries the canary; it reaches the client and nowhere else
        echoed = await sdk.messages.create(model=MODEL, max_tokens=5, messages=[
            {"role": "user", "content": f"{CANARY} #echo"}])
        assert echoed.content[0].type == "text" and CANARY in echoed.content[0].text
        # a disconnect mid-stream becomes an SSE error event the SDK raises on
        with pytest.raises(anthropic.APIError) as cut:
            async with sdk.messages.stream(model=MODEL, max_tokens=500, messages=[
                    {"role": "user", "content": f"{CANARY} #reply-chars=400 "
                                                "#disconnect-after=100"}]) as stream:
                async for _ in stream.text_stream:
                    pass
        assert CANARY not in str(cut.value)
        # the client going away mid-stream does not hurt the proxy
        async with httpx.AsyncClient(base_url=rp.url) as http:
            async with http.stream("POST", "/v1/messages", headers=HEADERS, json={
                    "model": MODEL, "max_tokens": 5, "stream": True, "messages": [
                        {"role": "user", "content": "#reply-chars=2000 #delay-ms=5"}]}) as r:
                async for _ in r.aiter_bytes():
                    break
            after = await http.post("/v1/messages", headers=HEADERS, json={
                "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            assert after.status_code == 200
    # an unreachable upstream is a 502 in Anthropic's shape
    async with proxy_env(upstream_url_override="http://127.0.0.1:9") as rp, httpx.AsyncClient(
            base_url=rp.url) as http:
        resp = await http.post("/v1/messages", headers=HEADERS, json={
            "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": CANARY}]})
        assert_error(resp, 502, "api_error")
    assert CANARY not in server_side_log(caplog)
