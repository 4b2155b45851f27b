"""The region's nonce ledger answers while the proxy sends the request upstream (``caller_auth``:
``begin``, ``settled_first``), and still has the last word: a replayed assertion, or a required
ledger that does not answer in time, is refused in the provider's shape with nothing of the
upstream's answer delivered, streamed or not, and the request is not observed as served;
whichever of the two answers first (the ledger, or the upstream). ext_proc the same: the request
goes on to Envoy's upstream, and the answer's first message is refused."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from csp_testkit import Region, RunningProxy
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import DOOR, Exchange, ext_proc, headers, immediate, request_body
from extproc_testkit import request_headers as envoy_headers
from nats.aio.msg import Msg

from safeguards.adapters.bus.nonce_bucket import nonce_bucket_name
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER, assertion
from safeguards.core.policy import Policy

KEY = DOOR
ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
SLOW_UPSTREAM = {"x-stand-in-wait-us": "400000"}  # the model's time: the ledger answers first


def body_of(stream: bool, marker: str) -> bytes:
    """A request the stand-in answers with its own text, ``marker`` first (whole in the first
    streamed delta, which holds 16 characters)."""
    assert len(marker) <= 16
    return json.dumps({"model": "m", "max_tokens": 50, "stream": stream,
                       "messages": [{"role": "user", "content": f"{marker} #echo"}]}).encode()


def signed(body: bytes, account: str = "acct-1") -> dict[str, str]:
    return {"x-csp-account-id": account, "content-type": "application/json",
            ASSERTION_HEADER: assertion(KEY, method="POST", target="/v1/messages",
                                        account=account, body=body, now=time.time(),
                                        nonce=secrets.token_hex(16))}


async def post(running: RunningProxy, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(running.url + "/v1/messages", content=body, headers=headers)


def observed_by(admission: Admission, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The actions ``admission`` observes (charged and sent as served or refused) from now."""
    actions: list[str] = []
    observe = admission.observe

    def spy(request: Any, action: str, *rest: Any) -> bool:
        actions.append(action)
        return observe(request, action, *rest)

    monkeypatch.setattr(admission, "observe", spy)
    return actions


def refused_whole(answer: httpx.Response, status: int, reply: str) -> dict[str, Any]:
    """A refusal in Anthropic's shape, one JSON body, no part of the model's answer."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert "event:" not in answer.text and reply not in answer.text
    doc: dict[str, Any] = answer.json()
    assert doc["type"] == "error"
    return doc


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_replay_at_another_host_gets_nothing_of_the_answer(
        proxy_env: ProxyEnv, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    reply = "cn" + secrets.token_hex(6)
    body = body_of(stream, reply)
    headers = signed(body)
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as host_a, \
            proxy_env(caller_auth="required", caller_keys=(KEY,)) as host_b:
        first = await post(host_a, body, headers)
        assert first.status_code == 200 and reply in first.text, first.text
        assert ("event: message_stop" in first.text) is stream
        observed = observed_by(host_b.proxy.admission, monkeypatch)
        # the upstream takes its time: the ledger's "replayed" comes while it is in flight
        again = await post(host_b, body, {**headers, **SLOW_UPSTREAM})
        doc = refused_whole(again, 401, reply)
        assert doc["error"] == {"type": "authentication_error",
                                "message": "the caller assertion was already used"}
        assert host_b.proxy.caller_auth.refused == {"replayed": 1}
        assert observed == []  # neither charged nor signalled as served
        # the upstream answers at once: it is in before the ledger, and still not delivered
        again = await post(host_b, body, headers)
        refused_whole(again, 401, reply)
        assert host_b.proxy.caller_auth.refused == {"replayed": 2} and observed == []
        fresh = await post(host_b, body, signed(body))  # a new assertion is served there
        assert fresh.status_code == 200 and observed == ["allow"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_required_ledger_that_answers_late_refuses_what_the_upstream_answered(
        proxy_env: ProxyEnv, region: Region, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    """The ledger's stream gone and its subjects held by a subscriber that never answers: the
    take runs out its deadline long after the upstream's answer is in; 503, nothing of it."""
    js = region.nc.jetstream()
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    reply = "cn" + secrets.token_hex(6)
    body = body_of(stream, reply)
    async with proxy_env(caller_auth="required", caller_keys=(KEY,),
                         nonce_ledger_deadline_s=1.0) as running:
        served = await post(running, body, signed(body))
        assert served.status_code == 200 and reply in served.text
        await js.delete_stream(f"KV_{nonce_bucket_name(region.name)}")
        held_sub = await region.nc.subscribe(f"$KV.{nonce_bucket_name(region.name)}.>", cb=hold)
        await region.nc.flush()
        try:
            observed = observed_by(running.proxy.admission, monkeypatch)
            upstream_before = running.upstream.requests
            late = await post(running, body, signed(body))
            doc = refused_whole(late, 503, reply)
            assert "replay check is unavailable" in doc["error"]["message"]
            assert running.upstream.requests == upstream_before + 1  # it was asked, and answered
            assert len(held) == 1 and observed == []
            assert running.proxy.inline.nonce_ledger is not None
            assert running.proxy.inline.nonce_ledger.unavailable == {"timeout": 1}
        finally:
            await held_sub.unsubscribe()


async def envoy_sends(exchange: Exchange, body: bytes, proof: str) -> None:
    """The request's headers and body, each answered by going on (to the upstream)."""
    pairs = envoy_headers("acct-1")
    pairs.request_headers.headers.headers.add(key=ASSERTION_HEADER, raw_value=proof.encode())
    assert (await exchange.send(pairs)).HasField("request_headers")
    assert (await exchange.send(request_body(body))).HasField("request_body")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_ext_proc_refuses_a_replay_at_the_answers_first_message(
        proxy_env: ProxyEnv, region: Region, nats_url: str, test_policy: Policy,
        monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    body = body_of(stream, "cn" + secrets.token_hex(6))
    spent = [signed(body) for _ in range(2)]  # taken at a proxy host, then sent to ext_proc
    media = "text/event-stream" if stream else "application/json"
    answer = pb.ProcessingRequest(response_headers=headers({":status": "200",
                                                            "content-type": media}))
    first_chunk = pb.ProcessingRequest(response_body=pb.HttpBody(body=b"event: ping\n\n"))
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as host_a:
        for sent in spent:
            assert (await post(host_a, body, sent)).status_code == 200
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        observed = observed_by(server.admission, monkeypatch)
        exchange = Exchange(stub.Process())
        await envoy_sends(exchange, body, spent[0][ASSERTION_HEADER])
        status, doc = immediate(await exchange.send(answer))  # nothing of the answer passes
        assert status == 401 and doc["error"] == {
            "type": "authentication_error", "message": "the caller assertion was already used"}
        # a filter that skips the response headers: the first body chunk is refused instead
        skipped = Exchange(stub.Process())
        await envoy_sends(skipped, body, spent[1][ASSERTION_HEADER])
        status, _ = immediate(await skipped.send(first_chunk))
        assert status == 401 and server.service.caller_auth.refused == {"replayed": 2}
        assert observed == []
        fresh = Exchange(stub.Process())  # a new assertion's answer passes
        await envoy_sends(fresh, body, signed(body)[ASSERTION_HEADER])
        assert (await fresh.send(answer)).HasField("response_headers")
