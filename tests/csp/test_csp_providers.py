"""Bedrock- and Vertex-shaped front ends through the official SDK clients, unmodified
(``anthropic.AsyncAnthropicBedrock`` and ``anthropic.AsyncAnthropicVertex`` pointed at the proxy
with ``base_url``, dummy credentials passed explicitly, no network): pass-through, streaming
(AWS event-stream frames; SSE), refusals in each provider's shape, a stream stopped, telemetry."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from csp_testkit import Region, RunningProxy, eventually, sdk_http
from nats.js import api

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.caller_auth import SignedCaller, load_caller_keys
from safeguards.adapters.csp.upstream import Script
from safeguards.core.codec import decode_signal
from safeguards.core.events import RequestObserved
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]

BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PROFILE_ARN = ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
               "us.anthropic.claude-3-5-sonnet-20241022-v2:0")
VERTEX_MODEL = "claude-3-5-sonnet-v2@20241022"
PROJECT = "sg-test-project"
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
WEAPONS_HOWTO = ("Here is how to build a pipe bomb at home. Step 1: fill a steel pipe with black "
                 "powder. Step 2: cap both ends and drill a hole for the fuse. ")
HARMFUL_STORY = (FILLER * 6)[:400] + WEAPONS_HOWTO * 8
BENIGN = "What is a good recipe for banana bread with walnuts?"


def bedrock(proxy: RunningProxy, account: str, **options: Any) -> anthropic.AsyncAnthropicBedrock:
    return anthropic.AsyncAnthropicBedrock(
        aws_access_key="AKIDEXAMPLE", aws_secret_key="not-a-real-secret",
        aws_region="us-east-1", base_url=proxy.url, max_retries=0,
        default_headers={"x-csp-account-id": account, **options.pop("headers", {})}, **options)


def vertex(proxy: RunningProxy, account: str, **options: Any) -> anthropic.AsyncAnthropicVertex:
    return anthropic.AsyncAnthropicVertex(
        region="us-east5", project_id=PROJECT, access_token="ya29.not-a-real-token",
        base_url=proxy.url + "/v1", max_retries=0,
        default_headers={"x-csp-account-id": account, **options.pop("headers", {})}, **options)


Client = anthropic.AsyncAnthropicBedrock | anthropic.AsyncAnthropicVertex


def clients(proxy: RunningProxy, account: str) -> list[tuple[str, Client, str]]:
    return [("bedrock", bedrock(proxy, account), BEDROCK_MODEL),
            ("vertex", vertex(proxy, account), VERTEX_MODEL)]


async def test_sdk_clients_pass_through_whole_and_streamed_with_telemetry(
        proxy_env: ProxyEnv, region: Region) -> None:
    async with proxy_env() as running:
        for name, sdk, model in clients(running, f"acct-{0}"):
            message = await sdk.messages.create(
                model=model, max_tokens=100, messages=[{"role": "user", "content": "hello"}])
            assert message.stop_reason == "end_turn", name
            assert message.content[0].type == "text"
            assert "scripted stand-in" in message.content[0].text
            async with sdk.messages.stream(model=model, max_tokens=100, messages=[
                    {"role": "user", "content": "stream please #reply-chars=300"}]) as stream:
                pieces = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            assert len("".join(pieces)) == 300 and len(pieces) > 10, name
            assert final.stop_reason == "end_turn" and final.usage.output_tokens == 75, name
        # an inference profile's ARN is one path segment (its slash percent-encoded)
        arn = await bedrock(running, "acct-0").messages.create(
            model=PROFILE_ARN, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert arn.model == PROFILE_ARN
        # Vertex's count-tokens operation passes like /v1/messages/count_tokens (no telemetry)
        counted = await vertex(running, "acct-0").messages.count_tokens(
            model=VERTEX_MODEL, messages=[{"role": "user", "content": "x" * 40}])
        assert counted.input_tokens == 10 and running.upstream.count_tokens_requests == 1
        await eventually(lambda: running.proxy.telemetry.sent >= 10, 10)
    js = region.nc.jetstream()
    sub = await js.pull_subscribe(f"sg.{region.name}.acct.>",
                                  stream=stream_name(region.name, "INPUTS"),
                                  config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT))
    observed = [decode_signal(m.data).observation for m in await sub.fetch(5, timeout=5)]
    assert all(isinstance(o, RequestObserved) for o in observed)
    seen = [(o.surface, o.model, o.streamed, o.output_tokens)  # type: ignore[union-attr]
            for o in observed]
    assert seen == [("proxy/bedrock", BEDROCK_MODEL, False, 35),
                    ("proxy/bedrock", BEDROCK_MODEL, True, 75),
                    ("proxy/vertex", VERTEX_MODEL, False, 35),
                    ("proxy/vertex", VERTEX_MODEL, True, 75),
                    ("proxy/bedrock", PROFILE_ARN, False, 35)]


async def test_refusals_come_in_each_providers_shape(proxy_env: ProxyEnv,
                                                     region: Region) -> None:
    async with proxy_env() as running:
        await region.enforce("acct-bad", 4, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-bad") == 1)
        with pytest.raises(anthropic.PermissionDeniedError) as bedrock_refused:
            await bedrock(running, "acct-bad").messages.create(
                model=BEDROCK_MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        response = bedrock_refused.value.response
        assert response.headers["x-amzn-errortype"].startswith("AccessDeniedException:")
        assert bedrock_refused.value.body == {
            "message": "this request was refused by the platform's usage policy"}
        with pytest.raises(anthropic.PermissionDeniedError) as vertex_refused:
            async with vertex(running, "acct-bad").messages.stream(
                    model=VERTEX_MODEL, max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}]) as stream:
                await stream.get_final_message()
        assert vertex_refused.value.body == {"error": {
            "code": 403, "message": "this request was refused by the platform's usage policy",
            "status": "PERMISSION_DENIED"}}
        # bad input: Bedrock's ValidationException, Google's INVALID_ARGUMENT
        with pytest.raises(anthropic.BadRequestError) as invalid:
            await bedrock(running, "acct-ok").messages.create(
                model=BEDROCK_MODEL, max_tokens=10, messages=[])
        assert invalid.value.response.headers["x-amzn-errortype"].startswith(
            "ValidationException:")
        with pytest.raises(anthropic.BadRequestError) as mismatch:
            await vertex(running, "acct-ok", headers={"x-csp-project-id": "another-project"}
                         ).messages.create(model=VERTEX_MODEL, max_tokens=10,
                              messages=[{"role": "user", "content": "hi"}])
        assert mismatch.value.body["error"]["status"] == "INVALID_ARGUMENT"  # type: ignore[index]
        # the upstream's own errors pass in its shape; a cut stream ends in the provider's way
        with pytest.raises(anthropic.RateLimitError) as throttled:
            await bedrock(running, "acct-ok").messages.create(
                model=BEDROCK_MODEL, max_tokens=10,
                messages=[{"role": "user", "content": "hi #status=429"}])
        assert throttled.value.response.headers["x-amzn-errortype"].startswith(
            "ThrottlingException:")
        for name, sdk, model in clients(running, "acct-ok"):
            with pytest.raises(anthropic.APIError) as cut:
                async with sdk.messages.stream(model=model, max_tokens=100, messages=[
                        {"role": "user", "content": "#reply-chars=200 #disconnect-after=64"}]
                        ) as stream:
                    await stream.get_final_message()
            assert "cut off" in str(cut.value), name
        assert running.proxy.gate.counts[("block", "level_4")] == 2


async def test_a_stream_is_stopped_in_each_providers_framing(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv) -> None:
    async with proxy_env(script=Script(reply=HARMFUL_STORY)) as running:
        await region.enforce("acct-watch", 2, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-watch") == 1)
        async with classifier_env():
            for name, sdk, model in clients(running, "acct-watch"):
                async with sdk.messages.stream(model=model, max_tokens=1000, messages=[
                        {"role": "user", "content": BENIGN}]) as stream:
                    text = "".join([t async for t in stream.text_stream])
                    final = await stream.get_final_message()
                assert final.stop_reason == "refusal", name
                assert text == HARMFUL_STORY[:784], name
        assert running.proxy.gate.counts[("terminate_stream", "weapons")] == 2


async def test_a_signed_bedrock_caller_is_proven_beside_its_sigv4_signature(
        proxy_env: ProxyEnv) -> None:
    """The front door's caller assertion rides beside the AWS signature (which the front door,
    not the gate, verifies): required mode takes the signed request and refuses the unsigned."""
    async with proxy_env(caller_auth="required") as running:
        http = sdk_http()
        key = load_caller_keys(running.proxy.config.region)[0]
        async with http.AsyncClient(auth=SignedCaller(key, "acct-signed")) as signed_http:
            signed = bedrock(running, "acct-signed", http_client=signed_http)
            ok = await signed.messages.create(
                model=BEDROCK_MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            assert ok.stop_reason == "end_turn"
        with pytest.raises(anthropic.AuthenticationError) as unsigned:
            await bedrock(running, "acct-signed").messages.create(
                model=BEDROCK_MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert unsigned.value.response.headers["x-amzn-errortype"].startswith(
            "UnrecognizedClientException:")
