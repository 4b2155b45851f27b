"""The region's batch ledger (``csp.batch_ledger``) with the official SDK: a batch's results read
on a gate that does not hold it (another worker or proxy host, a restarted proxy) are checked
under the decision each request was admitted with, its refused requests' errored results spliced
in, and observed with the prompt's details, as on the admitting gate; a record is the context of
its own account's reads only; a large batch's record spans several values."""

from __future__ import annotations

import secrets

import anyio
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
    scored,
    upstream_only,
)
from csp_testkit import Region, eventually

from safeguards.adapters.bus.batch_bucket import CHUNK_BYTES
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.csp.batch_ledger import (
    BatchEntry,
    BatchItem,
    BatchRecords,
    encode_entry,
    result_request_id,
)
from safeguards.adapters.csp.decision import INTERVENE, TERMINATE_STREAM, Decision, GateRequest
from safeguards.adapters.csp.upstream import Script
from safeguards.core.policy import Policy

PLAIN = BENIGN + " #reply-chars=100"


async def test_results_read_after_a_restart_are_checked_and_observed_as_admitted(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv,
        test_policy: Policy) -> None:
    """Created at L2 (safety prompt, output checked, the bomb request refused), the proxy
    restarted and the account lowered to L0 since: the restarted proxy still withholds the
    harmful completion (the admission's decision asked for the check), splices the refused
    request's errored result in, and observes each result with its prompt's metadata; the
    prompts were stored on the content stream by the first process at the creation."""
    policy = patient(test_policy)
    async with upstream_only(proxy_env, policy) as upstream, classifier_env():
        await region.enforce("acct-restart", 2, 1)
        async with proxy_env(upstream_url_override=upstream, policy=policy) as before:
            await eventually(lambda: before.proxy.gate.held_version("acct-restart") == 1)
            batch = await client(before, "acct-restart").messages.batches.create(requests=[
                request("plain", PLAIN), request("harmful", BENIGN), request("bomb", BOMB)])
            records = before.proxy.batches.records
            assert records is not None and records.written_bytes > 0 and not records.errors
        await region.enforce("acct-restart", 0, 2)
        async with proxy_env(upstream_url_override=upstream, policy=policy) as after:
            await eventually(lambda: after.proxy.gate.held_version("acct-restart") == 2)
            results = {r.custom_id: r.result async for r in
                       await client(after, "acct-restart").messages.batches.results(batch.id)}
            assert after.proxy.batches.unknown_results == 0
            await eventually(lambda: after.proxy.telemetry.sent >= 2, 10)
            # the first process stored the prompts on the content stream at the creation
            want = {(f"{batch.id}/{name}", "prompt") for name in ("plain", "harmful")}
            found: set[tuple[str, str]] = set()
            for _ in range(60):
                found |= await scored(region, "acct-restart")
                if want <= found:
                    break
                await anyio.sleep(0.3)
            assert want <= found
    assert results["plain"].type == "succeeded"
    assert results["plain"].message.stop_reason == "end_turn"
    assert results["harmful"].type == "succeeded"
    assert results["harmful"].message.stop_reason == "refusal"
    assert results["bomb"].type == "errored"
    assert results["bomb"].error.error.type == "permission_error"
    signals = {sid: o for sid, o in await observed(region, "acct-restart")}
    plain, harmful = (signals[f"req:{batch.id}/{name}"] for name in ("plain", "harmful"))
    assert (plain.action, plain.output_tokens, plain.prompt_chars) == ("intervene", 25, len(PLAIN))
    assert (harmful.action, harmful.prompt_chars) == ("terminate_stream", len(BENIGN))
    assert plain.surface == harmful.surface == "proxy/batch" and plain.model == "claude-test-1"
    assert plain.prompt_sha256 and plain.prompt_sha256 != harmful.prompt_sha256
    assert plain.prompt_link is not None and plain.prompt_link != harmful.prompt_link


async def test_another_gate_reads_with_the_record_and_another_account_without_it(
        proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv,
        test_policy: Policy) -> None:
    """Two gates at once (a proxy's workers, or two proxy hosts): results first read on the one
    that did not admit the batch are observed there with the prompt's details (the admitting
    gate's later read sends the same ids, with the prompt's text for scoring); another account
    reading the same batch id gets no context from the record (checked by its own standing, no
    refused results spliced in)."""
    policy = patient(test_policy)
    async with proxy_env(script=Script(reply=WEAPONS_HOWTO * 4), policy=policy) as admitting, \
            proxy_env(upstream_url_override=admitting.proxy.config.upstream_url,
                      policy=policy) as other:
        await region.enforce("acct-pair", 2, 1)
        await eventually(lambda: admitting.proxy.gate.held_version("acct-pair") == 1)
        async with classifier_env():
            batch = await client(admitting, "acct-pair").messages.batches.create(requests=[
                request("plain", PLAIN), request("bomb", BOMB)])
            assert not other.proxy.batches.known(batch.id)
            there = {r.custom_id: r.result async for r in
                     await client(other, "acct-pair").messages.batches.results(batch.id)}
            stranger = [r.custom_id async for r in
                        await client(other, "acct-stranger").messages.batches.results(batch.id)]
            here = {r.custom_id: r.result async for r in
                    await client(admitting, "acct-pair").messages.batches.results(batch.id)}
        assert there["bomb"].type == here["bomb"].type == "errored"
        assert stranger == ["plain"] and other.proxy.batches.unknown_results == 1
        await eventually(lambda: admitting.proxy.telemetry.sent >= 3
                         and other.proxy.telemetry.sent >= 2, 10)
    sid = f"req:{batch.id}/plain"
    plain = [(o.action, o.prompt_chars, o.prompt_link is not None)
             for s, o in await observed(region, "acct-pair") if s == sid]
    assert plain == [("intervene", len(PLAIN), True)] * 2  # the other gate's, then the admitting's


async def test_a_large_batch_record_spans_several_values_and_reads_back(region: Region) -> None:
    """Per-request metadata for 6,000 requests (random digests: it does not compress away) is
    written as several sealed values and read back whole."""
    records = BatchRecords(region.name, lambda: region.nc, load_producer_keys(region.name),
                           deadline_s=5.0)
    batch_id = "msgbatch_" + secrets.token_hex(12)
    decision = Decision("intervene", "level", 2, INTERVENE | TERMINATE_STREAM)
    admitted = {}
    for n in range(6000):
        custom_id = f"req-{n}"
        req = GateRequest("acct-large", result_request_id(batch_id, custom_id),
                          model="claude-test-1", prompt_chars=n, surface="proxy/batch",
                          prompt_sha256=secrets.token_hex(32), prompt_link=secrets.token_hex(16),
                          rated=False)
        admitted[custom_id] = BatchItem(req, decision, "")
    entry = BatchEntry(admitted, {"gone": {"type": "errored"}}, batch_id=batch_id,
                       account="acct-large")
    assert len(encode_entry(entry)) > CHUNK_BYTES
    assert await records.put(entry) and not records.errors
    back = await records.get(batch_id)
    assert back is not None and back.account == "acct-large" and back.refused == entry.refused
    assert len(back.admitted) == 6000 and back.admitted["req-17"].request.prompt_chars == 17
    got = back.admitted["req-5999"].request
    want = admitted["req-5999"].request
    assert (got.request_id, got.prompt_sha256, got.prompt_link, got.rated) == (
        want.request_id, want.prompt_sha256, want.prompt_link, False)
    assert back.admitted["req-1"].decision.classify_stream
    assert await records.get("msgbatch_never") is None and not records.errors


async def test_a_jobs_observed_note_is_created_once(region: Region) -> None:
    """The note that a provider's job's output was observed is a create: the first gate to
    write it is told so, a later one that it was there (so only one charges the job's
    tokens: ``job_outputs``)."""
    records = BatchRecords(region.name, lambda: region.nc, load_producer_keys(region.name),
                           deadline_s=5.0)
    name = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/" + secrets.token_hex(6)
    assert not await records.observed(name)
    assert await records.mark_observed(name) == "noted"
    assert await records.observed(name)
    assert await records.mark_observed(name) == "already"
    assert await records.mark_observed(name + "x") == "noted"
    assert not records.errors
