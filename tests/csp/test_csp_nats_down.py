"""With NATS gone the proxy keeps serving by its fail-open/closed settings and counts what it
could not send; when NATS returns, the cache catches up again."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from pathlib import Path

import anthropic
import httpx
import nats
import pytest
from anthropic.types import MessageParam
from csp_testkit import Region, eventually

from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded import EmbeddedNats, free_port
from safeguards.core.policy import default_policy

MODEL = "claude-test-1"


@pytest.mark.slow
async def test_proxy_serves_through_a_nats_outage(tmp_path: Path) -> None:
    base = default_policy()
    policy = replace(base, gate=replace(base.gate, max_staleness_s=1.0))
    server = EmbeddedNats(tmp_path / "nats").start()
    port = server.port
    try:
        nc = await nats.connect(server.url)
        name = "t" + secrets.token_hex(4)
        await ensure_gate_streams(nc.jetstream(), name)
        region = Region(name, nc, policy)
        await region.enforce("acct-l2", 2, 1)
        await nc.close()
        async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as up:
            config = ProxyConfig(region=name, upstream_url=up, nats_url=server.url,
                                 feed_heartbeat_s=0.2, publish_timeout_s=0.5,
                                 caller_auth="loopback")
            proxy = CspProxy(config, policy)
            async with serving(proxy, "127.0.0.1", free_port()) as url:
                assert proxy.feed is not None
                await eventually(lambda: proxy.gate.held_version("acct-l2") == 1, 10)
                plain = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0,
                                                 default_headers={"x-csp-account-id": "acct-ok"})
                watched = anthropic.AsyncAnthropic(
                    base_url=url, api_key="k", max_retries=0,
                    default_headers={"x-csp-account-id": "acct-l2"})
                msg: list[MessageParam] = [{"role": "user", "content": "hello"}]
                await plain.messages.create(model=MODEL, max_tokens=5, messages=msg)
                await eventually(lambda: proxy.telemetry.sent >= 3, 10)

                server.kill()
                await eventually(lambda: not proxy.link.is_connected if proxy.link else True)
                await eventually(lambda: proxy.gate.staleness(time.time()) > 1.0)
                for _ in range(5):  # an account in good standing is served (fail-open)
                    ok = await plain.messages.create(model=MODEL, max_tokens=5, messages=msg)
                    assert ok.stop_reason == "end_turn"
                async with plain.messages.stream(model=MODEL, max_tokens=5,
                                                 messages=msg) as stream:
                    assert (await stream.get_final_message()).stop_reason == "end_turn"
                # an account that needs synchronous screening: weapons is fail-closed
                with pytest.raises(anthropic.APIStatusError) as closed:
                    await watched.messages.create(model=MODEL, max_tokens=5, messages=msg)
                assert closed.value.status_code == 529
                await eventually(lambda: proxy.telemetry.dropped_total >= 18, 10)
                async with httpx.AsyncClient() as http:
                    health = (await http.get(url + "/healthz")).json()
                    metrics = (await http.get(url + "/metrics")).text
                assert health["nats_connected"] is False
                assert health["telemetry_dropped"] >= 18
                assert 'safeguards_csp_telemetry_dropped_total{reason="not_connected"}' in metrics
                assert proxy.gate.fallbacks[("stale_cache", "open")] >= 6
                assert proxy.gate.fallbacks[("stale_cache", "closed")] == 1

                # NATS comes back on the same port and store: the feed re-reads, telemetry flows
                server = EmbeddedNats(tmp_path / "nats", port=port).start()
                await eventually(lambda: proxy.link.is_connected if proxy.link else False, 15)
                await eventually(lambda: proxy.gate.staleness(time.time()) < 1.0,
                                 15)
                sent_before = proxy.telemetry.sent
                await plain.messages.create(model=MODEL, max_tokens=5, messages=msg)
                await eventually(lambda: proxy.telemetry.sent >= sent_before + 3, 10)
    finally:
        server.close()
