"""Fixtures for the inline adapter: a fresh region with its streams, the upstream stand-in, a
proxy served on loopback (uvicorn in the test's event loop) and the real classifier adapter
(the shipped default model, loaded once per session, behind MicroBatchScorer and
ClassifierService on the session's NATS)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import anyio
import nats
import pytest
from csp_testkit import Region, RunningProxy

from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import MicroBatchScorer
from safeguards.adapters.classifier.scorer_pair import stream_and_inline_scorers
from safeguards.adapters.csp.http_server import PROXY_SERVER_OPTIONS
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.csp.upstream import Script, UpstreamApp
from safeguards.adapters.embedded import free_port
from safeguards.core.policy import Policy, default_policy


@pytest.fixture
def test_policy() -> Policy:
    base = default_policy()
    # generous classify and screen deadlines: the classifier shares a busy 2-core test machine,
    # and a screen that answers late would make what a fresh account gets depend on the load
    return replace(base, gate=replace(base.gate, max_staleness_s=2.0, classify_deadline_ms=500,
                                      screen_deadline_ms=500))


@pytest.fixture
async def region(nats_url: str, test_policy: Policy) -> AsyncIterator[Region]:
    nc = await nats.connect(nats_url)
    name = "t" + secrets.token_hex(4)
    await ensure_gate_streams(nc.jetstream(), name)
    try:
        yield Region(name, nc, test_policy)
    finally:
        await nc.close()


ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]


@pytest.fixture
def proxy_env(region: Region, nats_url: str, test_policy: Policy) -> ProxyEnv:
    """Starts the upstream stand-in and a proxy for ``region`` (inside the test's own task, so
    their task groups open and close in one task); keyword arguments override ProxyConfig, except
    ``script`` (the model stand-in's Script) and ``policy`` (instead of ``test_policy``)."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[RunningProxy]:
        script: Script | None = overrides.pop("script", None)
        policy: Policy = overrides.pop("policy", test_policy)
        app = UpstreamApp(script)
        async with serving(app, "127.0.0.1", free_port(), lifespan="off") as upstream_url:
            # Unsigned test clients on this machine; tests/csp/test_csp_caller_auth.py signs.
            # The nonce ledger's deadline (25 ms when serving) is generous here: a busy 2-core
            # test machine must not turn a signed request into a 503 (tested on its own in
            # tests/csp/test_csp_nonce_ledger.py).
            # The feed's consumer clean-up at shutdown: 0.25 s, not 2, for the tests that stop a
            # proxy whose NATS is gone (a clean stop is answered at once: test_csp_shutdown).
            settings: dict[str, Any] = {"nats_url": nats_url, "feed_heartbeat_s": 0.25,
                                        "feed_cleanup_timeout_s": 0.25,
                                        "caller_auth": "loopback", "nonce_ledger_deadline_s": 2.0}
            upstream_url = overrides.pop("upstream_url_override", upstream_url)
            settings.update(overrides)
            config = ProxyConfig(region=region.name, upstream_url=upstream_url, **settings)
            proxy = CspProxy(config, policy)
            async with serving(proxy, "127.0.0.1", free_port(), **PROXY_SERVER_OPTIONS) as url:
                if proxy.feed is not None and settings["nats_url"] == nats_url:
                    with anyio.fail_after(10):
                        await proxy.feed.ready.wait()
                yield RunningProxy(proxy, url, app)

    return start


ClassifierEnv = Callable[..., contextlib.AbstractAsyncContextManager[ClassifierService]]


@pytest.fixture
def classifier_env(region: Region, nats_url: str,
                   classifier_model: LoadedModel) -> ClassifierEnv:
    """Runs the real classifier adapter for ``region`` (its own NATS connection, a fresh
    MicroBatchScorer, ClassifierService answering ``sg.<region>.classify``) inside the test's
    task; on exit its subscriptions are gone from the server before the block returns.
    ``paired``: the stream's and the inline scorer as a region runs them (``scorer_pair``)."""

    @contextlib.asynccontextmanager
    async def start(paired: bool = False) -> AsyncIterator[ClassifierService]:
        nc = await nats.connect(nats_url, name="csp-test-classifier")
        scorer, inline = (stream_and_inline_scorers(classifier_model) if paired
                          else (MicroBatchScorer(classifier_model), None))
        try:
            async with scorer, inline or contextlib.nullcontext():
                # the region's producer keys, as the gates under test seal and sign with them
                service = ClassifierService(nc, region.name, scorer,
                                            ClassifierSettings(partitions=16), inline=inline,
                                            producer=load_producer_keys(region.name))
                async with anyio.create_task_group() as tg:
                    await tg.start(service.run)
                    await nc.flush()
                    yield service
                    tg.cancel_scope.cancel()
            with anyio.fail_after(5):
                await nc.flush()  # the server has dropped the classify interest
        finally:
            await nc.close()

    return start
