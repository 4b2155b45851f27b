"""A caller assertion names one request: its method, its route (Bedrock's model id, Vertex's
project, location and model) and its body, once. A signed header set captured from the official
SDK clients and replayed on another route, model or body, or twice, is refused in each
provider's error shape (401), counted by reason, and never logged with the prompt."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from csp_testkit import Region, RunningProxy, sdk_http
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import DOOR, Exchange, ext_proc, headers, immediate, request_body
from hypothesis import given
from hypothesis import strategies as st

from safeguards.adapters.csp.caller_auth import (
    ASSERTION_HEADER,
    CallerAuth,
    CallerKey,
    SignedCaller,
    assertion,
    signed_bytes,
    signed_target,
)
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.routes import normalise_path, split_target
from safeguards.core.policy import Policy

KEY = CallerKey("door-1", bytes(range(32)))
NOW = 1_800_000_000.0
NOW_TS = int(NOW)
CANARY = "CANARY-caller-binding-5e1f"
MSG: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello " + CANARY}]
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
VERTEX_MODEL = "claude-3-5-sonnet-v2@20241022"
PROJECT = "sg-test-project"
ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
Sent = tuple[str, str, dict[str, str], bytes]  # method, url, headers, body as the SDK sent them


def _check(auth: CallerAuth, proof: str, method: str, target: str, body: bytes) -> str | None:
    """The refusal's reason, or None when the request is proven."""
    before = dict(auth.refused)
    try:
        auth.check({"x-csp-account-id": "acct-1"}, proof, body, "203.0.113.7", NOW,
                   method=method, target=target)
    except BadRequest as exc:
        assert exc.status == 401 and CANARY not in str(exc)
        return next(r for r in auth.refused if auth.refused[r] != before.get(r, 0))
    return None


def test_an_assertion_binds_method_route_model_and_body_once() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": CANARY}]}).encode()
    invoke = f"/model/{BEDROCK_MODEL}/invoke"

    def proof(method: str = "POST", target: str = invoke, signed: bytes = body) -> str:
        return assertion(KEY, method=method, target=target, account="acct-1", body=signed,
                         now=NOW)

    auth = CallerAuth([KEY])
    assert _check(auth, proof(), "POST", invoke, body) is None
    # another spelling of the same path is the same route (Envoy may normalise it)
    assert _check(auth, proof(), "POST", f"//model/./{BEDROCK_MODEL}/invoke", body) is None
    moved = [("POST", invoke + "-with-response-stream", body),
             ("POST", invoke.replace("v2:0", "v1:0"), body),
             ("POST", invoke + "?x=1", body),
             ("PUT", invoke, body),
             ("POST", "/v1/messages/count_tokens", body),
             ("POST", invoke, body.replace(CANARY.encode(), b"something else"))]
    for method, target, sent in moved:
        assert _check(auth, proof(), method, target, sent) == "bad_signature", target
    taken = proof()
    assert _check(auth, taken, "POST", invoke, body) is None
    assert _check(auth, taken, "POST", invoke, body) == "replayed"
    old_scheme = f"v1 kid={KEY.key_id} ts={int(NOW)} sig={'0' * 64}"
    assert _check(auth, old_scheme, "POST", invoke, body) == "unsupported_scheme"
    for malformed in (f"v2 kid=door-1 ts=\u00b2 nonce={'0' * 32} sig={'0' * 64}",
                      f"v2 kid=door-1 kid=door-1 ts=1 nonce={'0' * 32}",
                      f"v2 kid=door-1 ts=1 nonce={'0' * 32} sig={'0' * 64} sig={'0' * 64}",
                      "v2 kid=door-1 ts=1 nonce=zz sig=00", "v2", "v2  "):
        assert _check(auth, malformed, "POST", invoke, body) == "malformed", malformed


_fields = st.text(max_size=12)  # any characters: newlines, colons, digits, surrogates


@given(a=st.tuples(_fields, _fields, _fields, _fields, _fields, _fields, _fields, _fields),
       b=st.tuples(_fields, _fields, _fields, _fields, _fields, _fields, _fields, _fields))
def test_distinct_requests_never_sign_the_same_bytes(
        a: tuple[str, ...], b: tuple[str, ...]) -> None:
    """No header value, path or method can pass for a field boundary: equal signed bytes mean
    equal (nonce, method, target, identity, body digest)."""
    def signed(f: tuple[str, ...]) -> bytes:
        return signed_bytes(NOW_TS, f[0], f[1], f[2], (f[3], f[4], f[5], f[6]), f[7])

    assert (signed(a) == signed(b)) == (a == b)


@given(st.text(alphabet="/.%2Fab?:=&-", max_size=20), st.text(alphabet="/.%2Fab?:=&-",
                                                               max_size=20))
def test_signed_targets_differ_where_the_route_table_sees_different_requests(
        x: str, y: str) -> None:
    """Two targets sign alike only when the path the gate matches and forwards, and the query,
    are the same."""

    def seen(raw: str) -> tuple[str, str]:
        path, query = split_target(raw)
        return normalise_path(path), query

    assert (signed_target(x) == signed_target(y)) == (seen(x) == seen(y))



def capture(sent: list[Sent]) -> Any:
    async def hook(request: Any) -> None:  # an httpx request hook: runs after the auth hook
        sent.append((request.method, str(request.url), dict(request.headers), request.content))
    return hook


async def replay(method: str, url: str, sent_headers: dict[str, str], body: bytes
                 ) -> httpx.Response:
    kept = {k: v for k, v in sent_headers.items() if k not in ("host", "content-length")}
    async with httpx.AsyncClient() as http:
        return await http.request(method, url, headers=kept, content=body)


def signed_http(sent: list[Sent], key: CallerKey = KEY) -> Any:
    return sdk_http().AsyncClient(auth=SignedCaller(key, "acct-signed"),
                                  event_hooks={"request": [capture(sent)]})


def refused_reasons(running: RunningProxy) -> dict[str, int]:
    return dict(running.proxy.caller_auth.refused)


def metric(running: RunningProxy, reason: str) -> float:
    for line in running.proxy.metrics.render().decode().splitlines():
        if line.startswith(f'safeguards_csp_caller_refused_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_messages_assertions_do_not_move_to_another_route_or_body(
        proxy_env: ProxyEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as running:
        sent: list[Sent] = []
        sdk = anthropic.AsyncAnthropic(base_url=running.url, api_key="k", max_retries=0,
                                       http_client=signed_http(sent))
        counted = await sdk.messages.count_tokens(model="m", messages=MSG)
        assert counted.input_tokens > 0
        created = await sdk.messages.create(model="m", max_tokens=5, messages=MSG)
        assert created.stop_reason == "end_turn"
        (_, count_url, count_headers, count_body), (_, url, create_headers, body) = sent
        assert count_url.endswith("/v1/messages/count_tokens") and url.endswith("/v1/messages")

        other = json.dumps({**json.loads(body), "max_tokens": 4000}).encode()
        answers = [await replay("POST", url, count_headers, count_body),  # another route
                   await replay("POST", url, create_headers, other),  # another body
                   await replay("POST", url, create_headers, body)]  # the same, again
        for answer in answers:
            assert answer.status_code == 401
            assert answer.json()["error"]["type"] == "authentication_error"
        assert refused_reasons(running) == {"bad_signature": 2, "replayed": 1}
        assert metric(running, "bad_signature") == 2 and metric(running, "replayed") == 1
        assert running.upstream.requests == 1  # only the signed create reached the model
    ours = [r for r in caplog.records if r.name.startswith("safeguards")]  # (the SDK logs it)
    assert ours and not [r for r in ours if CANARY in r.getMessage()]


async def test_bedrock_assertions_do_not_move_to_another_model_or_operation(
        proxy_env: ProxyEnv) -> None:
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as running:
        sent: list[Sent] = []
        sdk = anthropic.AsyncAnthropicBedrock(
            aws_access_key="AKIDEXAMPLE", aws_secret_key="not-a-real-secret",
            aws_region="us-east-1", base_url=running.url, max_retries=0,
            http_client=signed_http(sent))
        ok = await sdk.messages.create(model=BEDROCK_MODEL, max_tokens=5, messages=MSG)
        assert ok.stop_reason == "end_turn"
        [(_, url, sent_headers, body)] = sent
        assert url.endswith("/invoke")
        for moved in (url.replace("sonnet-20241022-v2", "haiku-20241022-v1"),
                      url + "-with-response-stream"):
            answer = await replay("POST", moved, sent_headers, body)
            assert answer.status_code == 401, moved
            assert answer.headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")
            assert "message" in answer.json()
        assert refused_reasons(running) == {"bad_signature": 2}


async def test_vertex_assertions_do_not_move_to_another_project_location_or_model(
        proxy_env: ProxyEnv) -> None:
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as running:
        sent: list[Sent] = []
        sdk = anthropic.AsyncAnthropicVertex(
            region="us-east5", project_id=PROJECT, access_token="ya29.not-a-real-token",
            base_url=running.url + "/v1", max_retries=0, http_client=signed_http(sent))
        ok = await sdk.messages.create(model=VERTEX_MODEL, max_tokens=5, messages=MSG)
        assert ok.stop_reason == "end_turn"
        [(_, url, sent_headers, body)] = sent
        assert url.endswith(":rawPredict")
        for moved in (url.replace("sonnet-v2", "haiku-v1"),
                      url.replace(PROJECT, "sg-other-project"),
                      url.replace("us-east5", "europe-west1"),
                      url.replace(":rawPredict", ":streamRawPredict")):
            answer = await replay("POST", moved, sent_headers, body)
            assert answer.status_code == 401, moved
            assert answer.json()["error"]["status"] == "UNAUTHENTICATED"
        assert refused_reasons(running) == {"bad_signature": 4}


BEDROCK = f"/model/{BEDROCK_MODEL}/invoke"
VERTEX = (f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/"
          f"{VERTEX_MODEL}:rawPredict")


async def test_ext_proc_binds_the_assertion_to_method_path_and_body(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    def body(version: str) -> bytes:
        return json.dumps({"anthropic_version": version, "max_tokens": 10,
                           "messages": [{"role": "user", "content": CANARY}]}).encode()

    async def exchange(method: str, path: str, proof: str, sent: bytes
                       ) -> tuple[int, dict[str, object]] | None:
        ex = Exchange(stub.Process())
        pairs = {":method": method, ":path": path, "x-csp-account-id": "acct-door",
                 "content-type": "application/json", ASSERTION_HEADER: proof}
        first = await ex.send(pb.ProcessingRequest(request_headers=headers(pairs)))
        answer = first if first.HasField("immediate_response") else await ex.send(
            request_body(sent))
        await ex.close()
        return immediate(answer) if answer.HasField("immediate_response") else None

    def signed(path: str, sent: bytes) -> str:
        return assertion(DOOR, method="POST", target=path, account="acct-door", body=sent,
                         now=time.time())

    bedrock, vertex = body("bedrock-2023-05-31"), body("vertex-2023-10-16")
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        assert await exchange("POST", BEDROCK, signed(BEDROCK, bedrock), bedrock) is None
        assert await exchange("POST", VERTEX, signed(VERTEX, vertex), vertex) is None
        refusals = [
            await exchange("POST", BEDROCK.replace("v2:0", "v1:0"), signed(BEDROCK, bedrock),
                           bedrock),
            await exchange("POST", BEDROCK + "-with-response-stream", signed(BEDROCK, bedrock),
                           bedrock),
            await exchange("POST", VERTEX.replace("us-east5", "europe-west1"),
                           signed(VERTEX, vertex), vertex),
            await exchange("POST", "/v1/messages", signed("/v1/messages/count_tokens", bedrock),
                           bedrock),
            await exchange("POST", BEDROCK, signed(BEDROCK, bedrock), vertex)]  # body swapped
        taken = signed(BEDROCK, bedrock)
        assert await exchange("POST", BEDROCK, taken, bedrock) is None
        refusals.append(await exchange("POST", BEDROCK, taken, bedrock))
        assert [r[0] if r else None for r in refusals] == [401] * 6
        assert refusals[0] is not None and "message" in refusals[0][1]  # Bedrock's shape
        assert refusals[2] is not None and refusals[2][1]["error"] == {
            "code": 401, "status": "UNAUTHENTICATED",
            "message": "the caller assertion does not match this request"}
        assert server.service.caller_auth.refused == {"bad_signature": 5, "replayed": 1}
        assert CANARY not in json.dumps([r[1] for r in refusals if r])
        rendered = server.service.metrics.render().decode()
        assert 'safeguards_csp_caller_refused_total{reason="bad_signature"} 5.0' in rendered


def test_the_signed_body_digest_is_the_body_sha256() -> None:
    """The digest field is the body's sha256 in hex: a signer in another language can match it."""
    signed = signed_bytes(1, "n", "POST", "/v1/messages", ("a", "", "", ""),
                          hashlib.sha256(b"{}").hexdigest())
    assert signed.endswith(b"64:" + hashlib.sha256(b"{}").hexdigest().encode() + b"\n")
    assert signed.startswith(b"12:sg-caller-v2\n1:1\n1:n\n4:POST\n12:/v1/messages\n1:a\n0:\n")
