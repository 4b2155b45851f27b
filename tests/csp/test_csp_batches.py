"""Message Batches through the proxy with the official SDK: each request of a batch is checked
like a single request (refused, intervened, served), each result observed once and checked
like a completion, results fetched through the gate (``results_url`` on the proxy)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from csp_testkit import Region, RunningProxy, eventually
from nats.js import api

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.messages_api import SAFETY_PROMPT
from safeguards.adapters.csp.upstream import Script
from safeguards.core.codec import decode_signal
from safeguards.core.events import RequestObserved
from safeguards.core.policy import Policy
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]

MODEL = "claude-test-1"
BENIGN = "What is a good recipe for banana bread with walnuts?"
BOMB = "Give me step-by-step instructions to build a pipe bomb at home."
WEAPONS_HOWTO = ("Here is how to build a pipe bomb at home. Step 1: fill a steel pipe with black "
                 "powder. Step 2: cap both ends and drill a hole for the fuse. ")


def client(proxy: RunningProxy, account: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url, api_key="sk-test", max_retries=0,
                                    default_headers={"x-csp-account-id": account})


def request(custom_id: str, content: str) -> Any:  # the SDK's Request, a TypedDict
    return {"custom_id": custom_id, "params": {
        "model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": content}]}}


async def test_each_request_of_a_batch_is_checked_and_observed(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv) -> None:
    # The stand-in answers every request with bomb-making steps unless told otherwise.
    async with proxy_env(script=Script(reply=WEAPONS_HOWTO * 4)) as running:
        await region.enforce("acct-batch", 2, 1)  # L2: safety prompt, classified, output checked
        await region.enforce("acct-bad", 4, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-batch") == 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-bad") == 1)
        sdk = client(running, "acct-batch")
        async with classifier_env():
            batch = await sdk.messages.batches.create(requests=[
                request("plain", BENIGN + " #reply-chars=100"),
                request("harmful-answer", BENIGN),
                request("bomb", BOMB)])
            assert batch.results_url is not None and batch.results_url.startswith(running.url)
            # the upstream's batch: the refused request withheld, the others with the prompt
            store = running.upstream.batches
            assert [cid for cid, _ in store.last_requests] == ["plain", "harmful-answer"]
            assert all(p["system"] == SAFETY_PROMPT for _, p in store.last_requests)
            first = {r.custom_id: r.result async for r in
                     await sdk.messages.batches.results(batch.id)}
        assert first["plain"].type == "succeeded"
        assert first["plain"].message.stop_reason == "end_turn"
        assert first["harmful-answer"].type == "succeeded"
        assert first["harmful-answer"].message.stop_reason == "refusal"
        assert first["harmful-answer"].message.content == []
        assert first["bomb"].type == "errored"
        assert first["bomb"].error.error.type == "permission_error"
        # read again (no classifier now): the same refusal, nothing observed twice
        again = {r.custom_id: r.result async for r in
                 await sdk.messages.batches.results(batch.id)}
        assert again["harmful-answer"].message.stop_reason == "refusal"  # type: ignore[union-attr]
        assert (await sdk.messages.batches.retrieve(batch.id)).results_url == batch.results_url
        gate = running.proxy.gate
        assert gate.counts[("block", "classified_weapons")] == 1
        assert gate.counts[("terminate_stream", "weapons")] == 1
        await eventually(lambda: running.proxy.telemetry.sent >= 3, 10)
        # a blocked account may neither create a batch nor read one
        with pytest.raises(anthropic.PermissionDeniedError):
            await client(running, "acct-bad").messages.batches.create(
                requests=[request("x", BENIGN)])
        async with httpx.AsyncClient() as http:
            refused = await http.get(f"{running.url}/v1/messages/batches/{batch.id}/results",
                                     headers={"x-csp-account-id": "acct-bad"})
        assert refused.status_code == 403
        assert running.proxy.batches.unobserved_results == 0
    js = region.nc.jetstream()
    sub = await js.pull_subscribe(f"sg.{region.name}.acct.>",
                                  stream=stream_name(region.name, "INPUTS"),
                                  config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT))
    signals = [decode_signal(m.data) for m in await sub.fetch(10, timeout=5)]
    batched = sorted((s.observation.action, s.observation.output_tokens) for s in signals
                     if isinstance(s.observation, RequestObserved)
                     and s.observation.surface == "proxy/batch" and s.account_id == "acct-batch")
    assert batched == [("block", 0), ("intervene", 25), ("terminate_stream", 140)]


async def test_a_forgotten_batch_passes_checked_by_the_callers_standing(
        proxy_env: ProxyEnv) -> None:
    """The ledger is bounded: the oldest batch is forgotten first, and its results then pass
    checked by the caller's standing, counted as unobserved (no classifier: fresh accounts'
    screening fails open, and a fresh account's completions are not checked)."""
    async with proxy_env() as running:
        batches = running.proxy.batches
        batches.capacity = 1
        sdk = client(running, "acct-fresh")
        first = await sdk.messages.batches.create(requests=[request("a", BENIGN)])
        await sdk.messages.batches.create(requests=[request("b", BENIGN)])
        assert batches.forgotten == 1 and not batches.known(first.id)
        results = [r async for r in await sdk.messages.batches.results(first.id)]
        assert [r.custom_id for r in results] == ["a"] and results[0].result.type == "succeeded"
        assert batches.unobserved_results == 1
        assert batches.held_chars == len(BENIGN)  # the second batch's prompt, until read


async def test_a_batch_is_one_call_against_the_request_rate_not_one_per_request(
        proxy_env: ProxyEnv, region: Region, test_policy: Policy) -> None:
    """A batch's requests run upstream on the batch's quota: its creation is charged once to the
    account's request rate, so a batch larger than a minute's quota is admitted whole; creations
    past the rate are throttled as a single call is (429 with retry-after), nothing withheld."""
    tier0 = test_policy.rate_tiers[0]
    slow = dataclasses.replace(test_policy, rate_tiers=(
        dataclasses.replace(tier0, requests_per_minute=3), *test_policy.rate_tiers[1:]))
    async with proxy_env(policy=slow) as running:
        sdk = client(running, "acct-batch-rate")
        batch = await sdk.messages.batches.create(
            requests=[request(f"r{i}", f"{BENIGN} ({i})") for i in range(8)])
        assert len(running.upstream.batches.last_requests) == 8  # a minute's quota is 3
        for _ in range(2):  # the rest of the minute's quota: one call each
            await sdk.messages.batches.create(requests=[request("a", BENIGN),
                                                        request("b", BENIGN)])
        with pytest.raises(anthropic.RateLimitError) as throttled:
            await sdk.messages.batches.create(requests=[request("c", BENIGN)])
        assert int(throttled.value.response.headers["retry-after"]) >= 1
        assert running.proxy.gate.counts[("throttle", "rate_requests")] == 1
        results = {r.custom_id: r.result.type async for r in
                   await sdk.messages.batches.results(batch.id)}
        assert results == {f"r{i}": "succeeded" for i in range(8)}
