"""The region's nonce ledger: a caller assertion taken at one host of the region (a proxy, an
ext_proc instance) is refused at every other one; a ledger that cannot answer refuses the
request (``required``) or leaves the host's table the word (``local``), counted; the ledger holds
no nonce text; and the gate role may only create keys in its own region's ledger."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import nats
import pytest
from csp_testkit import Region, RunningProxy
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import (
    DOOR,
    Exchange,
    ext_proc,
    headers,
    immediate,
    request_body,
    request_headers,
)
from nats.aio.msg import Msg
from nats.js import api

from safeguards.adapters.bus.nonce_bucket import (
    LEDGER_MAX_AGE_S,
    nonce_bucket_name,
    nonce_subject,
)
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER, assertion
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.nonce_ledger import RegionLedger, ledger_key, ledger_mode
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port
from safeguards.core.policy import Policy

KEY = DOOR  # ext_proc's test key: one key for every host of the region
BODY = json.dumps({"model": "m", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hello"}]}).encode()
ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]


def signed(account: str = "acct-1", nonce: str | None = None) -> dict[str, str]:
    return {"x-csp-account-id": account, "content-type": "application/json",
            ASSERTION_HEADER: assertion(KEY, method="POST", target="/v1/messages",
                                        account=account, body=BODY, now=time.time(),
                                        nonce=nonce)}


async def post(running: RunningProxy, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(running.url + "/v1/messages", content=BODY, headers=headers)


def upstream_answers(content_type: str = "application/json") -> pb.ProcessingRequest:
    """Envoy's message once the upstream's answer begins (ext_proc settles the ledger there)."""
    return pb.ProcessingRequest(response_headers=headers(
        {":status": "200", "content-type": content_type}))


def counter(running: RunningProxy, name: str, labels: str) -> float:
    for line in running.proxy.metrics.render().decode().splitlines():
        if line.startswith(f"{name}_total{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_assertion_taken_at_one_host_is_replayed_at_every_other(
        proxy_env: ProxyEnv, region: Region, nats_url: str, test_policy: Policy) -> None:
    nonce = secrets.token_hex(16)
    headers = signed(nonce=nonce)
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as host_a, \
            proxy_env(caller_auth="required", caller_keys=(KEY,)) as host_b:
        assert host_a.proxy.inline.nonce_ledger is not None  # required: a NATS URL is set
        assert host_a.proxy.inline.nonce_ledger.mode == "required"
        first = await post(host_a, headers)
        assert first.status_code == 200, first.text
        again = await post(host_b, headers)  # the same assertion, another proxy host
        assert again.status_code == 401
        assert again.json()["error"]["type"] == "authentication_error"  # Anthropic's shape
        assert "already used" in again.json()["error"]["message"]
        assert host_b.proxy.caller_auth.refused == {"replayed": 1}
        assert counter(host_b, "safeguards_csp_caller_refused", 'reason="replayed"') == 1
        assert host_a.proxy.caller_auth.refused == {}
        # a fresh assertion still passes at the second host
        assert (await post(host_b, signed())).status_code == 200

    # ext_proc behind Envoy is a host of the same region: the assertion is spent there too
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        exchange = Exchange(stub.Process())
        pairs = request_headers("acct-1")
        pairs.request_headers.headers.headers.add(key=ASSERTION_HEADER,
                                                  raw_value=headers[ASSERTION_HEADER].encode())
        assert (await exchange.send(pairs)).HasField("request_headers")
        # the request goes upstream while the ledger answers; its answer is refused whole
        assert (await exchange.send(request_body(BODY))).HasField("request_body")
        status, body = immediate(await exchange.send(upstream_answers()))
        assert status == 401 and body["error"] == {
            "type": "authentication_error", "message": "the caller assertion was already used"}
        assert server.service.caller_auth.refused == {"replayed": 1}

    # what the ledger holds: keyed digests, never a nonce
    js = region.nc.jetstream()
    kv = await js.key_value(nonce_bucket_name(region.name))
    keys = await kv.keys()
    assert len(keys) == 2 and ledger_key(KEY.secret, nonce) in keys
    assert all(len(k) == 32 and nonce not in k and k != nonce for k in keys)
    info = await js.stream_info(f"KV_{nonce_bucket_name(region.name)}")
    assert info.config.max_age == LEDGER_MAX_AGE_S and info.config.max_msgs_per_subject == 1
    assert info.config.storage == api.StorageType.FILE


async def test_a_ledger_that_does_not_answer_refuses_or_leaves_the_host_the_word(
        proxy_env: ProxyEnv, region: Region) -> None:
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as required, \
            proxy_env(caller_auth="required", caller_keys=(KEY,),
                      nonce_ledger="local") as local:
        assert (await post(required, signed())).status_code == 200  # the ledger answers
        await region.nc.jetstream().delete_stream(f"KV_{nonce_bucket_name(region.name)}")
        refused = await post(required, signed())
        assert refused.status_code == 503
        assert refused.json()["type"] == "error"  # Anthropic's shape, no request text
        assert "replay check is unavailable" in refused.json()["error"]["message"]
        assert counter(required, "safeguards_csp_nonce_ledger_unavailable",
                       'action="refused",reason="no_ledger"') == 1
        headers = signed()
        assert (await post(local, headers)).status_code == 200  # the host's table alone
        assert counter(local, "safeguards_csp_nonce_ledger_unavailable",
                       'action="local_only",reason="no_ledger"') == 1
        again = await post(local, headers)  # and that table still refuses a replay here
        assert again.status_code == 401 and local.proxy.caller_auth.refused == {"replayed": 1}


async def test_ext_proc_refuses_with_503_while_its_required_ledger_is_gone(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    await region.nc.jetstream().delete_stream(f"KV_{nonce_bucket_name(region.name)}")
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        exchange = Exchange(stub.Process())
        pairs = request_headers("acct-1")
        pairs.request_headers.headers.headers.add(key=ASSERTION_HEADER,
                                                  raw_value=signed()[ASSERTION_HEADER].encode())
        assert (await exchange.send(pairs)).HasField("request_headers")
        assert (await exchange.send(request_body(BODY))).HasField("request_body")
        status, body = immediate(await exchange.send(upstream_answers()))
        assert status == 503 and body["type"] == "error"
        assert server.inline.nonce_ledger is not None
        assert server.inline.nonce_ledger.unavailable == {"no_ledger": 1}


async def test_a_slow_ledger_is_cut_at_its_deadline_and_logged_once(
        nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A stream that never answers in time (a subscriber that holds the request): each take
    waits the deadline, no longer; ``local`` accepts, ``required`` refuses; one log line."""
    name = "t" + secrets.token_hex(4)
    nc = await nats.connect(nats_url)
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    try:
        await nc.subscribe(f"$KV.{nonce_bucket_name(name)}.>", cb=hold)
        await nc.flush()
        seen: list[tuple[str, str]] = []
        local = RegionLedger(name, lambda: nc, mode="local", deadline_s=0.025,
                             on_unavailable=lambda r, a: seen.append((r, a)))
        caplog.set_level(logging.WARNING, "safeguards.adapters.csp.nonce_ledger")
        for _ in range(5):
            t0 = time.perf_counter()
            assert await local.take(KEY.secret, secrets.token_hex(16)) is None
            assert time.perf_counter() - t0 < 0.2
        assert seen == [("timeout", "local_only")] * 5 and len(held) == 5
        assert len(caplog.records) == 1 and "5 times" not in caplog.text  # once, not per call
        required = RegionLedger(name, lambda: nc, mode="required", deadline_s=0.025)
        with pytest.raises(BadRequest) as refused:
            await required.take(KEY.secret, secrets.token_hex(16))
        assert refused.value.status == 503 and required.unavailable == {"timeout": 1}
    finally:
        await nc.close()


async def test_no_connection_is_unavailable_without_waiting() -> None:
    ledger = RegionLedger("us", lambda: None, mode="local")
    assert await ledger.take(KEY.secret, secrets.token_hex(16)) is None
    assert ledger.unavailable == {"disconnected": 1}
    with pytest.raises(BadRequest):
        await RegionLedger("us", lambda: None).take(KEY.secret, secrets.token_hex(16))
    assert ledger_mode(None, "nats://x") == "required" and ledger_mode(None, None) is None
    with pytest.raises(ValueError):
        ledger_mode("required", None)
    with pytest.raises(ValueError):
        ledger_mode("off", "nats://x")
    with pytest.raises(ValueError):
        nonce_subject("us", "not-a-digest")


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


@pytest.mark.slow
async def test_proxy_commands_with_workers_take_nonces_region_wide(
        region: Region, nats_url: str, tmp_path: Path) -> None:
    """Two ``safeguards proxy`` hosts of one region (one with two worker processes, one with
    none) and one caller key: an assertion accepted by the first is replayed at the second."""
    up_port, ports = free_port(), (free_port(), free_port())
    env = {f"SAFEGUARDS_CALLER_KEYS_{region.name.upper()}": f"{KEY.key_id}:{KEY.secret.hex()}"}
    common = ["--region", region.name, "--upstream", f"http://127.0.0.1:{up_port}",
              "--nats", nats_url, "--caller-auth", "required",
              "--nonce-ledger-deadline-ms", "2000"]  # a busy test machine: no 503 by load
    procs = [_spawn(["upstream", "--port", str(up_port)], tmp_path / "upstream.log", env),
             _spawn(["proxy", *common, "--port", str(ports[0]), "--workers", "2"],
                    tmp_path / "proxy-a.log", env),
             _spawn(["proxy", *common, "--port", str(ports[1])], tmp_path / "proxy-b.log", env)]
    try:
        wait_for_port("127.0.0.1", up_port, 30)
        for port in ports:
            wait_for_port("127.0.0.1", port, 60)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            for port in ports:
                while (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200:
                    assert time.monotonic() < deadline
            headers = signed()
            answers = [await http.post(f"http://127.0.0.1:{port}/v1/messages", content=BODY,
                                       headers=headers) for port in (*ports, ports[0])]
            fresh = await http.post(f"http://127.0.0.1:{ports[1]}/v1/messages", content=BODY,
                                    headers=signed())
            metrics = (await http.get(f"http://127.0.0.1:{ports[1]}/metrics")).text
        assert [a.status_code for a in answers] == [200, 401, 401], answers[0].text
        assert fresh.status_code == 200
        assert 'safeguards_csp_caller_refused_total{reason="replayed"} 1.0' in metrics
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
