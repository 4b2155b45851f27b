"""ext_proc's route table knows Bedrock's and Vertex's routes, and checks each: identity, the
provider's body, the gate; refusals are immediate answers in the provider's own shape, a
Bedrock stream passes frame by frame, and any other path or method stays refused."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from csp_testkit import Region, eventually
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import Exchange, ext_proc, headers, immediate, request_body, request_headers

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.aws_eventstream import FrameDecoder, chunk_event, chunk_frame
from safeguards.core.policy import Policy

ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]
BEDROCK = "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/invoke"
BEDROCK_STREAM = "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/invoke-with-response-stream"
VERTEX = ("/v1/projects/sg-test-project/locations/us-east5/publishers/anthropic/models/"
          "claude-3-5-sonnet-v2@20241022:rawPredict")
BENIGN = "What is a good recipe for banana bread with walnuts?"


def provider_body(content: str, version: str) -> dict[str, object]:
    return {"anthropic_version": version, "max_tokens": 10,
            "messages": [{"role": "user", "content": content}]}


def set_headers(response: pb.ProcessingResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode()
            for h in response.immediate_response.headers.set_headers}


async def test_provider_routes_are_checked_and_refused_in_their_shape(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    await region.enforce("acct-blocked", 4, 1)
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-blocked") == 1)
        # a blocked account: refused on its headers, in Bedrock's and in Google's shape
        r = await Exchange(stub.Process()).send(request_headers("acct-blocked", path=BEDROCK))
        status, body = immediate(r)
        assert status == 403 and body == {
            "message": "this request was refused by the platform's usage policy"}
        assert set_headers(r)["x-amzn-errortype"].startswith("AccessDeniedException:")
        status, body = immediate(await Exchange(stub.Process()).send(
            request_headers("acct-blocked", path=VERTEX)))
        assert status == 403 and body["error"] == {
            "code": 403, "message": "this request was refused by the platform's usage policy",
            "status": "PERMISSION_DENIED"}
        # every spelling of a provider route is that route, checked
        spelled = "//model/anthropic.claude-3-5-sonnet-20241022-v2:0/./invoke/"
        status, _ = immediate(await Exchange(stub.Process()).send(
            request_headers("acct-blocked", path=spelled)))
        assert status == 403
        # the provider's body is checked: a Bedrock body naming the model, a Vertex body whose
        # stream flag disagrees with the operation
        for path, doc in ((BEDROCK, {**provider_body(BENIGN, "bedrock-2023-05-31"),
                                     "model": "other"}),
                          (VERTEX, {**provider_body(BENIGN, "vertex-2023-10-16"),
                                    "stream": True})):
            ex = Exchange(stub.Process())
            assert (await ex.send(request_headers("acct-ok", path=path))).HasField(
                "request_headers")
            status, body = immediate(await ex.send(request_body(doc)))
            assert status == 400, path
        # not a route: a Bedrock path with another operation, another method
        for method, path, code in (("POST", "/model/m/converse", 404),
                                   ("GET", BEDROCK, 405),
                                   ("POST", VERTEX.replace(":rawPredict", ":predict"), 404)):
            r = await Exchange(stub.Process()).send(
                request_headers("acct-ok", path=path, method=method))
            assert immediate(r)[0] == code, path
        assert server.gate.counts[("block", "level_4")] == 3


async def test_a_bedrock_stream_passes_frame_by_frame_and_is_observed(
        region: Region, nats_url: str, test_policy: Policy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        surfaces: list[str] = []
        emit = server.telemetry.emit_observed

        def spy(request: object, *args: object) -> None:
            surfaces.append(request.surface)  # type: ignore[attr-defined]
            emit(request, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(server.telemetry, "emit_observed", spy)
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-ok", path=BEDROCK_STREAM))
        r = await ex.send(request_body(provider_body(BENIGN, "bedrock-2023-05-31")))
        assert r.HasField("request_body")
        r = await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "application/vnd.amazon.eventstream"})))
        assert r.HasField("response_headers")
        frames = (chunk_frame({"type": "message_start", "message": {
                      "usage": {"input_tokens": 12, "output_tokens": 1}}})
                  + chunk_frame({"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})
                  + chunk_frame({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "a short reply"}})
                  + chunk_frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                 "usage": {"output_tokens": 4}}))
        # split mid-frame: ext_proc passes the bytes as they come (the account is not guarded)
        for piece, end in ((frames[:37], False), (frames[37:], True)):
            r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
                body=piece, end_of_stream=end)))
            assert not r.response_body.response.HasField("body_mutation")
        await ex.call.done_writing()
        await eventually(lambda: surfaces == ["ext_proc/bedrock"])
    decoded = EventStreamBuffer()
    decoded.add_data(frames)
    assert len(list(decoded)) == 4


async def test_a_bedrock_stream_is_stopped_in_event_stream_frames(
        region: Region, nats_url: str, test_policy: Policy,
        classifier_env: ClassifierEnv) -> None:
    filler = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    howto = ("Here is how to build a pipe bomb at home. Step 1: fill a steel pipe with black "
             "powder. Step 2: cap both ends and drill a hole for the fuse. ")
    story = (filler * 6)[:400] + howto * 8
    await region.enforce("acct-watch", 2, 1)
    async with classifier_env(), ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-watch") == 1)
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-watch", path=BEDROCK_STREAM))
        await ex.send(request_body(provider_body(BENIGN, "bedrock-2023-05-31")))
        await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "application/vnd.amazon.eventstream"})))
        pieces = [chunk_frame({"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}})]
        pieces += [chunk_frame({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": story[i:i + 16]}})
                   for i in range(0, len(story), 16)]
        sent = b""
        for piece in pieces:  # one frame a message, each split in two: a partial frame waits
            for part in (piece[:20], piece[20:]):
                r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(body=part)))
                sent += r.response_body.response.body_mutation.body
            if r.response_body.response.body_mutation.clear_body:
                break  # ended: what follows is emptied
        events: list[Any] = [chunk_event(f) for f in FrameDecoder().feed(sent)]
        assert [e["type"] for e in events[-3:]] == [
            "content_block_stop", "message_delta", "message_stop"]
        assert events[-2]["delta"]["stop_reason"] == "refusal"
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        # checkpoints every 400 characters: the filler passes, the 16 that reached 800 withheld
        assert text == story[:784]
        assert server.gate.counts[("terminate_stream", "weapons")] == 1


async def test_batches_behind_envoy_are_checked_request_by_request(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    """No classifier: fresh accounts' screening fails open, so a fresh account's requests are
    served; a blocked account's batch is refused whole, on its headers."""
    await region.enforce("acct-bad", 4, 1)
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-bad") == 1)
        status, _ = immediate(await Exchange(stub.Process()).send(
            request_headers("acct-bad", path="/v1/messages/batches")))
        assert status == 403
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-batch", path="/v1/messages/batches"))
        params = {"model": "m", "max_tokens": 10,
                  "messages": [{"role": "user", "content": BENIGN}]}
        r = await ex.send(request_body({"requests": [{"custom_id": "a", "params": params},
                                                     {"custom_id": "b", "params": params}]}))
        forwarded = json.loads(r.request_body.response.body_mutation.body)
        assert [q["custom_id"] for q in forwarded["requests"]] == ["a", "b"]
        await ex.send(pb.ProcessingRequest(response_headers=headers(
            {":status": "200", "content-type": "application/json"})))
        created = json.dumps({"id": "msgbatch_1", "type": "message_batch",
                              "results_url": "http://model.internal/x"}).encode()
        held = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(body=created[:10])))
        assert held.response_body.response.body_mutation.body == b""  # held back to the end
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=created[10:], end_of_stream=True)))
        answered = json.loads(r.response_body.response.body_mutation.body)
        assert answered["results_url"].endswith("/v1/messages/batches/msgbatch_1/results")
        assert server.service.batches.known("msgbatch_1")
        # the results: observed once each (telemetry), passed whole
        ex = Exchange(stub.Process())
        path = "/v1/messages/batches/msgbatch_1/results"
        r = await ex.send(pb.ProcessingRequest(request_headers=headers(
            {":method": "GET", ":path": path, "x-csp-account-id": "acct-batch"}, end=True)))
        assert r.HasField("request_headers")
        await ex.send(pb.ProcessingRequest(response_headers=headers({":status": "200"})))
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                    "content": [{"type": "text", "text": "a short reply"}],
                    "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}}
        lines = b"".join(json.dumps({"custom_id": c, "result": {
            "type": "succeeded", "message": message}}).encode() + b"\n" for c in "ab")
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=lines, end_of_stream=True)))
        results = [json.loads(line) for line in
                   r.response_body.response.body_mutation.body.splitlines()]
        assert [x["custom_id"] for x in results] == ["a", "b"]
        assert server.service.batches.unknown_results == 0
        await eventually(lambda: server.telemetry.sent >= 2)
