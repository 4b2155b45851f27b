"""Envoy ext_proc at the protocol level: a real grpc client speaking ProcessingRequest messages."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import pytest
from csp_testkit import Region, eventually
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import (
    DOOR,
    Exchange,
    body_of,
    ext_proc,
    headers,
    immediate,
    request_body,
    request_headers,
)

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER, assertion
from safeguards.adapters.csp.messages_api import SAFETY_PROMPT, sse
from safeguards.core.codec import decode_signal
from safeguards.core.events import RequestObserved
from safeguards.core.policy import Policy
from safeguards.core.subjects import stream_name

CANARY = "CANARY-ext-proc-91b2"
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]

# Real texts scored by the shipped default model: a recipe question is clear on every category,
# the lorem filler too, and bomb-making steps score ~0.9 on weapons.
BENIGN = "What is a good recipe for banana bread with walnuts?"
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
WEAPONS_HOWTO = ("Here is how to build a pipe bomb at home. Step 1: fill a steel pipe with black "
                 "powder. Step 2: cap both ends and drill a hole for the fuse. ")
HARMFUL_STORY = (FILLER * 6)[:400] + WEAPONS_HOWTO * 8


async def test_allow_path_and_telemetry(region: Region, nats_url: str,
                                        test_policy: Policy) -> None:
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers())
        assert r.HasField("request_headers") and not r.request_headers.response.HasField(
            "header_mutation")
        r = await ex.send(request_body(body_of("hello")))
        assert r.HasField("request_body")
        assert not r.request_body.response.body_mutation.HasField("body")
        r = await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "application/json"})))
        assert r.HasField("response_headers")
        completion = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                      "content": [{"type": "text", "text": "hi back"}], "stop_reason": "end_turn",
                      "usage": {"input_tokens": 3, "output_tokens": 2}}
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=json.dumps(completion).encode(), end_of_stream=True)))
        assert r.HasField("response_body")
        await ex.close()
        await eventually(lambda: server.telemetry.sent >= 3, 10)
        js = region.nc.jetstream()
        sub = await js.pull_subscribe(f"sg.{region.name}.acct.>",
                                      stream=stream_name(region.name, "INPUTS"))
        obs = decode_signal((await sub.fetch(1, timeout=5))[0].data).observation
        assert isinstance(obs, RequestObserved)
        assert (obs.surface, obs.action, obs.input_tokens, obs.output_tokens) == (
            "ext_proc", "allow", 3, 2)


async def test_refusals_are_immediate_responses(region: Region, nats_url: str,
                                                test_policy: Policy,
                                                caplog: pytest.LogCaptureFixture) -> None:
    await region.enforce("acct-blocked", 4, 1)
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-blocked") == 1)
        ex = Exchange(stub.Process())
        status, body = immediate(await ex.send(request_headers(None)))
        assert status == 401 and body["error"] == {"type": "authentication_error",
                                                   "message": "missing x-csp-account-id header"}
        ex = Exchange(stub.Process())
        status, _ = immediate(await ex.send(request_headers("bad id")))
        assert status == 400
        ex = Exchange(stub.Process())
        await ex.send(request_headers())
        status, body = immediate(await ex.send(request_body(b"{" + CANARY.encode())))
        assert status == 400 and CANARY not in json.dumps(body)
        ex = Exchange(stub.Process())  # a blocked account is refused on its headers
        status, body = immediate(await ex.send(request_headers("acct-blocked")))
        assert status == 403 and body["error"]["type"] == "permission_error"  # type: ignore[index]
        assert server.gate.counts[("block", "level_4")] == 1
        # the models list generates nothing: it passes on a valid account, as on the proxy
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers(path="/v1/models", method="GET", end=True))
        assert r.HasField("request_headers")
        status, _ = immediate(await Exchange(stub.Process()).send(
            request_headers(None, path="/v1/models", method="GET", end=True)))
        assert status == 401
    assert CANARY not in caplog.text


async def test_intervention_rewrites_the_body_and_streams_end_in_refusal(
    region: Region, nats_url: str, test_policy: Policy, classifier_env: ClassifierEnv
) -> None:
    await region.enforce("acct-l2", 2, 1)
    async with classifier_env(), ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-l2") == 1)
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-l2"))
        r = await ex.send(request_body(body_of(BENIGN, stream=True)))
        mutated = json.loads(r.request_body.response.body_mutation.body)
        assert mutated["system"] == SAFETY_PROMPT
        r = await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "text/event-stream"})))
        assert list(r.response_headers.response.header_mutation.remove_headers) == [
            "content-length"]
        start = sse("message_start", {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}})
        start += sse("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(body=start)))
        assert r.response_body.response.body_mutation.body == start
        seen = b""
        deltas_sent = 0
        for i in range(10):  # 100 characters per delta: checks at 400 (filler: clear) and
            # 800 (weapons: crosses)
            delta = sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta",
                          "text": HARMFUL_STORY[i * 100:(i + 1) * 100]}})
            # split each event across two chunks: partial events wait for the rest
            r1 = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
                body=delta[:30])))
            r2 = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
                body=delta[30:])))
            seen += r1.response_body.response.body_mutation.body
            seen += r2.response_body.response.body_mutation.body
            deltas_sent += 1
            if b"refusal" in seen:
                break
        assert deltas_sent == 8  # the 8th crossed 800 and was withheld
        assert seen.count(b"event: content_block_delta") == 7
        assert seen.endswith(b'"type":"message_stop"}\n\n')
        assert b'"stop_reason":"refusal"' in seen
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=b"event: ping\ndata: {}\n\n", end_of_stream=True)))
        assert r.response_body.response.body_mutation.clear_body
        await ex.close()
        assert server.gate.counts[("terminate_stream", "weapons")] == 1


async def test_throttle_and_a_withheld_json_completion(
    region: Region, nats_url: str, test_policy: Policy, classifier_env: ClassifierEnv
) -> None:
    await region.enforce("acct-l3", 3, 1)  # 10 requests a minute, sync classification
    async with classifier_env(), ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-l3") == 1)
        # a bomb-making JSON completion (~0.9 on weapons): replaced by a refusal
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-l3"))
        await ex.send(request_body(body_of(BENIGN)))
        await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "application/json"})))
        completion = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                      "content": [{"type": "text", "text": WEAPONS_HOWTO * 8}],
                      "stop_reason": "end_turn",
                      "usage": {"input_tokens": 3, "output_tokens": 225}}
        raw = json.dumps(completion).encode()
        r1 = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(body=raw[:100])))
        assert not r1.response_body.response.body_mutation.HasField("body")
        r2 = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=raw[100:], end_of_stream=True)))
        withheld = json.loads(r2.response_body.response.body_mutation.body)
        assert withheld["stop_reason"] == "refusal" and withheld["content"] == []
        await ex.close()
        for _ in range(9):
            ex = Exchange(stub.Process())
            await ex.send(request_headers("acct-l3"))
            r = await ex.send(request_body(body_of(BENIGN)))
            assert r.HasField("request_body")
            await ex.close()
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-l3"))
        r = await ex.send(request_body(body_of(BENIGN)))
        status, body = immediate(r)
        assert status == 429 and body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        sent = {h.header.key: h.header.raw_value
                for h in r.immediate_response.headers.set_headers}
        assert 1 <= int(sent["retry-after"]) <= 6
        assert sent["x-safeguards-action"] == b"throttle"


async def test_an_organisation_blocks_on_headers_and_duplicate_identity_is_refused(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    await region.enforce("org:acme", 4, 1)
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("org:acme") == 1, 15)
        pairs = {":method": "POST", ":path": "/v1/messages", "x-csp-account-id": "fresh",
                 "x-csp-organization-id": "acme"}
        status, _ = immediate(await Exchange(stub.Process()).send(
            pb.ProcessingRequest(request_headers=headers(pairs))))
        assert status == 403 and server.gate.counts[("block", "org_level_4")] == 1
        twice = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
            base_pb2.HeaderValue(key=":method", raw_value=b"POST"),
            base_pb2.HeaderValue(key=":path", raw_value=b"/v1/messages"),
            base_pb2.HeaderValue(key="x-csp-account-id", raw_value=b"a"),
            base_pb2.HeaderValue(key="x-csp-account-id", raw_value=b"b")]))
        status, body = immediate(await Exchange(stub.Process()).send(
            pb.ProcessingRequest(request_headers=twice)))
        assert status == 400 and "duplicate" in json.dumps(body)


async def test_a_required_caller_assertion_is_checked_on_the_body(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    doc = body_of(BENIGN)
    raw = json.dumps(doc).encode()
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        unsigned = Exchange(stub.Process())
        await unsigned.send(request_headers("acct-door"))
        status, _ = immediate(await unsigned.send(request_body(doc)))
        await unsigned.close()
        assert status == 401

        proof = assertion(DOOR, method="POST", target="/v1/messages", account="acct-door",
                          body=raw, now=time.time())
        signed = Exchange(stub.Process())
        pairs = {":method": "POST", ":path": "/v1/messages", "x-csp-account-id": "acct-door",
                 ASSERTION_HEADER: proof}
        await signed.send(pb.ProcessingRequest(request_headers=headers(pairs)))
        answer = await signed.send(request_body(raw))
        assert not answer.HasField("immediate_response")  # admitted
        await signed.close()

        stolen = Exchange(stub.Process())  # the same proof for another account
        await stolen.send(pb.ProcessingRequest(request_headers=headers(
            pairs | {"x-csp-account-id": "acct-victim"})))
        status, _ = immediate(await stolen.send(request_body(raw)))
        await stolen.close()
        assert status == 401
        assert server.service.caller_auth.refused == {"unsigned": 1, "bad_signature": 1}


async def test_loopback_judges_the_downstream_client_where_envoy_names_it(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    """Envoy on this machine forwards everyone: with ``source.address`` sent, an unsigned
    request is taken only from a client that is itself on this machine."""
    from google.protobuf import struct_pb2  # type: ignore[import-untyped]

    def from_client(address: str) -> pb.ProcessingRequest:
        message = request_headers("acct-downstream")
        message.attributes["envoy.filters.http.ext_proc"].CopyFrom(
            struct_pb2.Struct(fields={"source.address": struct_pb2.Value(string_value=address)}))
        return message

    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        outside = Exchange(stub.Process())
        await outside.send(from_client("10.1.2.3:41000"))
        status, _ = immediate(await outside.send(request_body(body_of(BENIGN))))
        await outside.close()
        assert status == 401
        for address in ("127.0.0.1:41000", "[::1]:41000"):
            local = Exchange(stub.Process())
            await local.send(from_client(address))
            answer = await local.send(request_body(body_of(BENIGN)))
            assert not answer.HasField("immediate_response")  # admitted
            await local.close()
        assert server.service.caller_auth.refused == {"unsigned": 1}
