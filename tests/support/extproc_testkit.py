"""Driving the ext_proc servicer at the protocol level: a real grpc client speaking
ProcessingRequest messages to an ``ExtProcServer`` on loopback, one ``Exchange`` per stream."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import grpc
from csp_testkit import Region, eventually
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from safeguards.adapters.csp.caller_auth import CallerKey
from safeguards.adapters.csp.extproc import ExtProcConfig, ExtProcServer
from safeguards.core.policy import Policy

DOOR = CallerKey("door-1", bytes(range(32)))


def headers(pairs: dict[str, str], *, end: bool = False) -> pb.HttpHeaders:
    return pb.HttpHeaders(end_of_stream=end, headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]))


def request_headers(account: str | None = "acct-x", *, path: str = "/v1/messages",
                    method: str = "POST", end: bool = False) -> pb.ProcessingRequest:
    pairs = {":method": method, ":path": path, "content-type": "application/json"}
    if account is not None:
        pairs["x-csp-account-id"] = account
    return pb.ProcessingRequest(request_headers=headers(pairs, end=end))


def request_body(doc: object) -> pb.ProcessingRequest:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


def body_of(content: str, stream: bool = False) -> dict[str, object]:
    return {"model": "m", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": content}]}


class Exchange:
    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call

    async def send(self, message: pb.ProcessingRequest) -> pb.ProcessingResponse:
        await self.call.write(message)
        response = await self.call.read()
        assert isinstance(response, pb.ProcessingResponse)
        return response

    async def close(self) -> None:
        await self.call.done_writing()
        assert await self.call.read() == grpc.aio.EOF


@contextlib.asynccontextmanager
async def ext_proc(region: Region, nats_url: str, policy: Policy, caller_auth: str = "loopback"
                   ) -> AsyncIterator[tuple[ExtProcServer, pb_grpc.ExternalProcessorStub]]:
    """An ext_proc server; by default Envoy (this test, on 127.0.0.1) sends unsigned callers."""
    server = ExtProcServer(ExtProcConfig(region=region.name, nats_url=nats_url,
                                         listen="127.0.0.1:0", feed_heartbeat_s=0.25,
                                         feed_cleanup_timeout_s=0.25,
                                         caller_auth=caller_auth, caller_keys=(DOOR,),
                                         nonce_ledger_deadline_s=2.0), policy)  # a busy machine
    async with server.running():
        assert server.feed is not None
        await eventually(server.feed.ready.is_set, 10)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, pb_grpc.ExternalProcessorStub(channel)


def immediate(response: pb.ProcessingResponse) -> tuple[int, dict[str, object]]:
    assert response.HasField("immediate_response")
    body = json.loads(response.immediate_response.body)
    assert isinstance(body, dict)
    return response.immediate_response.status.code, body


def error_type(body: dict[str, object]) -> object:
    error = body["error"]
    assert isinstance(error, dict)
    return error["type"]
