"""ext_proc denies by default: only the route table's routes pass, every spelling of a route is
checked as that route, and a failure inside the servicer is a fail-closed answer on the open
stream, never an ended stream (which Envoy's failure_mode_allow would pass ungated)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from csp_testkit import Region, eventually
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import (
    Exchange,
    body_of,
    error_type,
    ext_proc,
    immediate,
    request_body,
    request_headers,
)

from safeguards.adapters.csp.admission import Admitted
from safeguards.adapters.csp.extproc import ExtProcServer
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.provider_api import ProviderCall
from safeguards.core.policy import Policy

CANARY = "CANARY-ext-proc-routes-5d1e"
BENIGN = "What is a good recipe for banana bread with walnuts?"


def sample(server: ExtProcServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def sent_headers(response: pb.ProcessingResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode()
            for h in response.immediate_response.headers.set_headers}


def admissions(server: ExtProcServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the account of every ``admit`` the servicer makes."""
    seen: list[str] = []
    admit = server.service.admission.admit

    async def spy(caller: Caller, body: bytes, surface: str, call: ProviderCall) -> Admitted:
        seen.append(caller.account)
        return await admit(caller, body, surface, call)

    monkeypatch.setattr(server.service.admission, "admit", spy)
    return seen


VARIANTS = ["/v1/messages/", "//v1/messages", "/v1/./messages", "/v1/%6dessages",
            "/v1/x/../messages", "/../v1/messages//", "/v1/%2E/messages?beta=true"]


async def test_every_spelling_of_messages_is_gated_and_forwarded_as_checked(
        region: Region, nats_url: str, test_policy: Policy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await region.enforce("acct-blocked", 4, 1)
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-blocked") == 1)
        seen = admissions(server, monkeypatch)
        for path in VARIANTS:
            status, body = immediate(await Exchange(stub.Process()).send(
                request_headers("acct-blocked", path=path)))
            assert status == 403 and error_type(body) == "permission_error", path
            ex = Exchange(stub.Process())
            r = await ex.send(request_headers("acct-ok", path=path))
            assert r.HasField("request_headers"), path
            mutation = r.request_headers.response
            query = "?beta=true" if "?" in path else ""
            assert [(h.header.key, h.header.raw_value) for h in
                    mutation.header_mutation.set_headers] == [
                (":path", f"/v1/messages{query}".encode())]
            assert mutation.clear_route_cache
            r = await ex.send(request_body(body_of(BENIGN)))
            assert r.HasField("request_body"), path
            await ex.close()
        assert seen == ["acct-ok"] * len(VARIANTS)
        assert server.gate.counts[("block", "level_4")] == len(VARIANTS)
        # the canonical spelling goes on untouched
        r = await Exchange(stub.Process()).send(request_headers("acct-ok"))
        assert not r.request_headers.response.HasField("header_mutation")


DENIED = [
    ("GET", "/v1/messages/batches/not-a-batch/results", 404, "not_found"),
    ("PUT", "/v1/messages/batches", 405, "method_not_allowed"),
    ("POST", "/v1/messages/batches/msgbatch_1/results", 405, "method_not_allowed"),
    ("POST", "/V1/messages", 404, "not_found"),
    ("POST", "/v1%2Fmessages", 404, "not_found"),
    ("POST", "/v1/complete", 404, "not_found"),
    ("GET", "/metrics", 404, "not_found"),
    ("GET", "/healthz", 404, "not_found"),
    ("GET", "/v1/messages", 405, "method_not_allowed"),
    ("PUT", "/v1/messages", 405, "method_not_allowed"),
    ("post", "/v1/messages", 405, "method_not_allowed"),
    ("GET", "/v1/messages/count_tokens", 405, "method_not_allowed"),
    ("POST", "/v1/models", 405, "method_not_allowed"),
]


async def test_unknown_routes_and_methods_are_refused_and_counted(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        for method, path, status, _ in DENIED:
            ex = Exchange(stub.Process())
            r = await ex.send(request_headers("acct-x", path=path, method=method))
            code, body = immediate(r)
            assert code == status, (method, path)
            expected = "not_found_error" if status == 404 else "invalid_request_error"
            assert error_type(body) == expected
            assert ("allow" in sent_headers(r)) == (status == 405)
            await ex.close()  # the stream ended with the answer
        for reason in ("not_found", "method_not_allowed"):
            assert sample(server, "safeguards_csp_extproc_denied_total", reason=reason) == sum(
                1 for *_, why in DENIED if why == reason)
        # a body with no request headers before it has no route: refused, counted
        ex = Exchange(stub.Process())
        code, body = immediate(await ex.send(request_body(body_of(BENIGN))))
        assert code == 500 and error_type(body) == "api_error"
        assert sample(server, "safeguards_csp_extproc_denied_total",
                      reason="no_request_headers") == 1


async def test_count_tokens_and_models_pass_checked_without_generation(
        region: Region, nats_url: str, test_policy: Policy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await region.enforce("acct-blocked", 4, 1)
    async with ext_proc(region, nats_url, test_policy, caller_auth="required") as (server, stub):
        await eventually(lambda: server.gate.held_version("acct-blocked") == 1)
        seen = admissions(server, monkeypatch)
        # count_tokens: a blocked account is refused on its headers
        status, _ = immediate(await Exchange(stub.Process()).send(
            request_headers("acct-blocked", path="/v1/messages/count_tokens")))
        assert status == 403
        # an unsigned caller is refused on its body (the assertion signs the body)
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers("acct-x", path="/v1/messages/count_tokens"))
        assert r.HasField("request_headers")
        status, _ = immediate(await ex.send(request_body(body_of(BENIGN))))
        assert status == 401
        # the models list: checked on its headers (no body follows)
        status, _ = immediate(await Exchange(stub.Process()).send(
            request_headers("acct-x", path="/v1/models", method="GET", end=True)))
        assert status == 401
        assert server.service.caller_auth.refused == {"unsigned": 2}
        assert seen == []  # neither is admitted: no rate limit, no telemetry
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        seen = admissions(server, monkeypatch)
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-x", path="/v1/messages/count_tokens"))
        r = await ex.send(request_body(body_of(BENIGN)))
        assert r.HasField("request_body") and not r.request_body.response.HasField(
            "body_mutation")
        await ex.close()
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers("acct-x", path="/v1/models/claude-x", method="GET",
                                          end=True))
        assert r.HasField("request_headers")
        await ex.close()
        assert seen == []


async def test_a_failure_is_answered_fail_closed_counted_and_logged_without_content(
        region: Region, nats_url: str, test_policy: Policy, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    async def admit_fails(caller: Caller, body: bytes, surface: str,
                          call: ProviderCall) -> Admitted:
        raise RuntimeError(f"admit broke on {json.loads(body)['messages'][0]['content']}")

    def peek_fails(*args: Any) -> Any:
        raise KeyError(CANARY)

    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        with monkeypatch.context() as patch:
            patch.setattr(server.service.admission, "admit", admit_fails)
            ex = Exchange(stub.Process())
            await ex.send(request_headers("acct-x"))
            r = await ex.send(request_body(body_of(CANARY)))
            status, body = immediate(r)
            assert status == 500 and error_type(body) == "api_error"
            assert CANARY not in r.immediate_response.body.decode()
            await ex.close()  # a response on a stream that ends well, not a gRPC error
        with monkeypatch.context() as patch:
            patch.setattr(server.service.gate, "peek", peek_fails)
            ex = Exchange(stub.Process())
            status, _ = immediate(await ex.send(request_headers("acct-x")))
            assert status == 500
            await ex.close()

        def observe_fails(*args: Any) -> None:
            raise ValueError(CANARY)

        with monkeypatch.context() as patch:  # after the answer: counted, the stream ends well
            patch.setattr(server.service.admission, "observe", observe_fails)
            ex = Exchange(stub.Process())
            await ex.send(request_headers("acct-x"))
            assert (await ex.send(request_body(body_of(BENIGN)))).HasField("request_body")
            await ex.close()
        for stage in ("request_body", "request_headers", "observe"):
            assert sample(server, "safeguards_csp_extproc_errors_total", stage=stage) == 1
        # the servicer goes on serving
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-x"))
        assert (await ex.send(request_body(body_of(BENIGN)))).HasField("request_body")
        await ex.close()
    assert "RuntimeError" in caplog.text and "KeyError" in caplog.text
    assert "Traceback" in caplog.text and "in _request_body" in caplog.text
    assert CANARY not in caplog.text
