"""Caller authentication: a request is charged to an account only when the provider's front door
signed that identity, that route and that body, recently, with a key the gate trusts."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam
from csp_testkit import Region, RunningProxy, sdk_http

from safeguards.adapters.csp.caller_auth import (
    ASSERTION_HEADER,
    CallerAuth,
    CallerKey,
    SignedCaller,
    assertion,
)
from safeguards.adapters.csp.messages_api import BadRequest

KEY = CallerKey("door-1", bytes(range(32)))
NEXT = CallerKey("door-2", bytes(range(1, 33)))
BODY = json.dumps({"model": "m", "max_tokens": 5, "messages": []}).encode()
ROUTE = {"method": "POST", "target": "/v1/messages"}
NOW = 1_800_000_000.0
MSG: list[MessageParam] = [{"role": "user", "content": "hello"}]
ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]


def ident(account: str = "acct-1", **more: str) -> dict[str, str]:
    return {"x-csp-account-id": account, **more}


def refused(auth: CallerAuth, identity: dict[str, str], proof: str | None,
            body: bytes = BODY, peer: str | None = "203.0.113.7", now: float = NOW) -> bool:
    try:
        auth.check(identity, proof, body, peer, now, **ROUTE)
    except BadRequest as exc:
        assert exc.status == 401
        assert "acct" not in str(exc)  # the message never echoes the identity
        return True
    return False


def test_only_a_fresh_assertion_of_this_identity_and_body_is_accepted() -> None:
    auth = CallerAuth([KEY, NEXT], "required")
    good = assertion(KEY, account="acct-1", body=BODY, now=NOW, **ROUTE)
    assert not refused(auth, ident(), good)
    assert not refused(auth, ident(), assertion(NEXT, account="acct-1", body=BODY, now=NOW,
                                                **ROUTE))
    assert refused(auth, ident(), None)  # unsigned
    assert refused(auth, ident("acct-2"), good)  # someone else's identity
    assert refused(auth, ident(**{"x-csp-organization-id": "acme"}), good)  # an added org
    assert refused(auth, ident(), good, body=BODY + b" ")  # another body
    assert refused(auth, ident(), good, now=NOW + 301)  # too old
    assert refused(auth, ident(), good.replace("door-1", "door-9"))  # a key not trusted
    assert refused(auth, ident(), good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert refused(auth, ident(), "v2 kid=door-1")  # malformed
    forged = assertion(CallerKey("door-1", b"x" * 32), account="acct-1", body=BODY, now=NOW,
                       **ROUTE)
    assert refused(auth, ident(), forged)
    assert refused(auth, ident(), good)  # taken once already
    assert auth.refused == {"unsigned": 1, "bad_signature": 5, "expired": 1,
                            "unknown_key": 1, "malformed": 1, "replayed": 1}


def test_loopback_mode_takes_unsigned_callers_from_this_machine_only() -> None:
    auth = CallerAuth([KEY], "loopback")
    assert not refused(auth, ident(), None, peer="127.0.0.1")
    assert not refused(auth, ident(), None, peer="::1")
    assert refused(auth, ident(), None, peer="192.0.2.10")
    assert refused(auth, ident(), None, peer=None)
    bad = assertion(KEY, account="acct-2", body=BODY, now=NOW, **ROUTE)
    assert refused(auth, ident(), bad, peer="127.0.0.1")  # a present assertion is checked
    with pytest.raises(ValueError):
        CallerAuth([KEY], "off")


async def test_the_unmodified_sdk_signs_through_an_auth_hook(proxy_env: ProxyEnv,
                                                             region: Region) -> None:
    async with proxy_env(caller_auth="required", caller_keys=(KEY,)) as env:
        signed = anthropic.AsyncAnthropic(
            base_url=env.url, api_key="k", max_retries=0,
            http_client=sdk_http().AsyncClient(auth=SignedCaller(KEY, "acct-signed",
                                                                 organization="acme")))
        answer = await signed.messages.create(model="m", max_tokens=5, messages=MSG)
        assert answer.stop_reason == "end_turn"
        async with signed.messages.stream(model="m", max_tokens=5, messages=MSG) as stream:
            assert (await stream.get_final_message()).stop_reason == "end_turn"

        unsigned = anthropic.AsyncAnthropic(base_url=env.url, api_key="k", max_retries=0,
                                            default_headers={"x-csp-account-id": "acct-x"})
        with pytest.raises(anthropic.AuthenticationError):
            await unsigned.messages.create(model="m", max_tokens=5, messages=MSG)
        # an assertion lifted from one request does not carry another account's
        proof = assertion(KEY, account="acct-signed", body=b"{}", now=time.time(), **ROUTE)
        async with httpx.AsyncClient() as http:
            r = await http.post(env.url + "/v1/messages", content=b"{}", headers={
                "x-csp-account-id": "acct-victim", ASSERTION_HEADER: proof})
            twice = await http.post(env.url + "/v1/messages", content=b"{}", headers=[
                ("x-csp-account-id", "acct-signed"), (ASSERTION_HEADER, proof),
                (ASSERTION_HEADER, proof)])
        assert r.status_code == 401 and twice.status_code == 400
        assert env.proxy.caller_auth.refused == {"unsigned": 1, "bad_signature": 1}
