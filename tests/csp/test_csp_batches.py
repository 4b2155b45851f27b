"""Message Batches through the proxy with the official SDK: each request of a batch is checked
like a single request (refused, intervened, served), each result observed once and checked
like a completion, results fetched through the gate (``results_url`` on the proxy); results read
on a gate that does not hold the batch (another worker, a restart), after an escalation, or of a
batch the ledger forgot. Each result is observed under its result id
(``{batch_id}/{custom_id}``), so the account's actor takes it once whichever gate sends it."""

from __future__ import annotations

import dataclasses
import logging

import anthropic
import httpx
import pytest
from batch_testkit import (
    BENIGN,
    BOMB,
    WEAPONS_HOWTO,
    ClassifierEnv,
    ProxyEnv,
    client,
    observed,
    patient,
    request,
)
from csp_testkit import Region, eventually

from safeguards.adapters.csp.messages_api import SAFETY_PROMPT
from safeguards.adapters.csp.upstream import Script
from safeguards.adapters.embedded import free_port
from safeguards.core.policy import Policy


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
        assert running.proxy.batches.unknown_results == 0
    batched = sorted((o.action, o.output_tokens) for _, o in await observed(region, "acct-batch")
                     if o.surface == "proxy/batch")
    assert batched == [("block", 0), ("intervene", 25), ("terminate_stream", 140)]


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


async def test_results_read_on_a_gate_without_the_batch_or_its_record_are_checked_and_observed(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv,
        caplog: pytest.LogCaptureFixture, test_policy: Policy) -> None:
    """Two gates on one upstream (a proxy's workers, or one restarted), the region's batch
    ledger out of the other's reach (unwritten, unreadable: tests/csp/test_csp_batch_ledger.py
    has the read with it): the batch created on one, its results read on the other, which checks
    them by the account's standing (L2: output checked) and observes each once under its result
    id; the admitting gate's own read later sends the same ids (taken once by the actor) with the
    prompt's metadata."""
    caplog.set_level(logging.DEBUG)
    async with proxy_env(script=Script(reply=WEAPONS_HOWTO * 4),
                         policy=patient(test_policy)) as admitting, \
            proxy_env(upstream_url_override=admitting.proxy.config.upstream_url,
                      policy=patient(test_policy)) as other:
        other.proxy.batches.records = None  # the ledger did not answer it
        await region.enforce("acct-two", 2, 1)
        await eventually(lambda: admitting.proxy.gate.held_version("acct-two") == 1
                         and other.proxy.gate.held_version("acct-two") == 1)
        async with classifier_env():
            batch = await client(admitting, "acct-two").messages.batches.create(requests=[
                request("plain", BENIGN + " #reply-chars=100"), request("harmful", BENIGN)])
            assert not other.proxy.batches.known(batch.id)
            for _ in range(2):  # the second read is checked again, not observed again
                there = {r.custom_id: r.result async for r in
                         await client(other, "acct-two").messages.batches.results(batch.id)}
                assert there["plain"].type == "succeeded"
                assert there["plain"].message.stop_reason == "end_turn"
                assert there["harmful"].type == "succeeded"
                assert there["harmful"].message.stop_reason == "refusal"
                assert there["harmful"].message.content == []
            assert other.proxy.batches.unknown_results == 4
            assert other.proxy.gate.counts[("terminate_stream", "weapons")] == 2
            here = {r.custom_id: r.result async for r in
                    await client(admitting, "acct-two").messages.batches.results(batch.id)}
            assert here["harmful"].message.stop_reason == "refusal"  # type: ignore[union-attr]
        # the prompts were stored on the content stream at the creation: the admitting gate's
        # read sends each request's signal and completion only
        await eventually(lambda: admitting.proxy.telemetry.sent >= 4
                         and other.proxy.telemetry.sent >= 4, 10)
    signals = await observed(region, "acct-two")
    by_gate = [(sid, o.action, o.output_tokens, o.prompt_chars > 0) for sid, o in signals]
    ids = {name: f"req:{batch.id}/{name}" for name in ("plain", "harmful")}
    assert sorted(by_gate) == sorted([
        (ids["plain"], "intervene", 25, False), (ids["harmful"], "terminate_stream", 140, False),
        (ids["plain"], "intervene", 25, True), (ids["harmful"], "terminate_stream", 140, True)])
    served = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                        if r.name.startswith(("safeguards", "uvicorn", "nats")))  # not the SDK's
    assert served and BENIGN not in served and "pipe bomb" not in served  # no text in logs


async def test_a_result_read_after_an_escalation_is_checked_as_the_account_stands_now(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv,
        test_policy: Policy) -> None:
    """A batch runs for hours: a fresh account's results (not output-checked when it was
    admitted, nor at the first read) are checked once it stands at L2, withheld from then on,
    and observed only once (at the first read)."""
    async with proxy_env(script=Script(reply=WEAPONS_HOWTO * 4),
                         policy=patient(test_policy)) as running:
        sdk = client(running, "acct-later")
        batch = await sdk.messages.batches.create(requests=[request("harmful", BENIGN)])
        before = [r.result async for r in await sdk.messages.batches.results(batch.id)]
        assert before[0].type == "succeeded" and before[0].message.stop_reason == "end_turn"
        await region.enforce("acct-later", 2, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-later") == 1)
        async with classifier_env():
            after = [r.result async for r in await sdk.messages.batches.results(batch.id)]
            # scored once: read again, it is not scored again
            again = [r.result async for r in await sdk.messages.batches.results(batch.id)]
        assert after[0].type == "succeeded" and after[0].message.stop_reason == "refusal"
        assert again[0].message.stop_reason == "refusal"  # type: ignore[union-attr]
        assert running.proxy.gate.counts[("terminate_stream", "weapons")] == 1
        await eventually(lambda: running.proxy.telemetry.sent >= 2, 10)  # signal, completion
    signals = await observed(region, "acct-later")
    assert [sid for sid, _ in signals] == [f"req:{batch.id}/harmful"]


async def test_a_forgotten_batch_is_observed_when_forgotten_and_its_results_later(
        proxy_env: ProxyEnv, region: Region) -> None:
    """The ledger is bounded: the batch it forgets has its requests observed then (no
    tokens), and its results, read later, are observed under the same ids (so the actor keeps
    the first), checked and observed from the region's batch ledger's record."""
    async with proxy_env() as running:
        batches = running.proxy.batches
        batches.capacity = 1
        sdk = client(running, "acct-fresh")
        first = await sdk.messages.batches.create(requests=[request("a", BENIGN)])
        await sdk.messages.batches.create(requests=[request("b", BOMB)])
        assert batches.forgotten == 1 and not batches.known(first.id)
        # both prompts stored on the content stream at their creations: no text held
        assert batches.held_chars == 0 and batches.prompts is not None
        assert batches.prompts.published == 2 and not batches.prompts.unpublished
        results = [r async for r in await sdk.messages.batches.results(first.id)]
        assert [r.custom_id for r in results] == ["a"] and results[0].result.type == "succeeded"
        assert batches.unknown_results == 0  # the region's record of it
        await eventually(lambda: running.proxy.telemetry.sent >= 3, 10)
    signals = await observed(region, "acct-fresh")
    assert [(sid, o.output_tokens > 0, o.prompt_chars) for sid, o in signals] == [
        (f"req:{first.id}/a", False, len(BENIGN)), (f"req:{first.id}/a", True, len(BENIGN))]


async def test_a_batch_the_upstream_did_not_take_has_its_requests_observed_as_not_served(
        proxy_env: ProxyEnv, region: Region) -> None:
    """As a single request whose upstream failed: each admitted request observed, no tokens."""
    async with proxy_env(upstream_url_override=f"http://127.0.0.1:{free_port()}") as running:
        with pytest.raises(anthropic.APIStatusError) as failed:
            await client(running, "acct-down").messages.batches.create(
                requests=[request("a", BENIGN), request("b", BENIGN + " (2)")])
        assert failed.value.status_code >= 500
        await eventually(lambda: running.proxy.telemetry.sent >= 4, 10)
    signals = await observed(region, "acct-down")
    assert sorted((o.surface, o.output_tokens, o.prompt_chars > 0) for _, o in signals) == [
        ("proxy/batch", 0, True)] * 2
