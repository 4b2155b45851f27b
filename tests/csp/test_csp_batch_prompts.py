"""A batch's admitted prompts are stored on the region's content stream before its creation is
answered (``csp.batch_prompts``): a ``safeguards proxy`` process killed with SIGKILL right after
answering has lost none of them, and the results read later on another process observe each
request once without sending its prompt again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anthropic
import anyio
import httpx
import pytest
from batch_testkit import (
    BENIGN,
    ClassifierEnv,
    ProxyEnv,
    client,
    input_signals,
    observed,
    patient,
    request,
    scored,
    upstream_only,
)
from csp_testkit import Region, eventually
from jobs_testkit import content as stream_items

from safeguards.adapters.csp.identity import load_link_key
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port
from safeguards.core.events import ScoreRecorded
from safeguards.core.policy import Policy
from safeguards.core.prompt_links import prompt_link_key
from safeguards.core.subjects import stream_name

ACCOUNT = "acct-killed"
PROMPTS = {"plain": BENIGN + " #reply-chars=100", "second": BENIGN + " (and a second loaf)"}


async def content(region: Region) -> Counter[tuple[str, str]]:
    """(request id, kind) of the account's items on the region's content stream, how many
    times each."""
    return Counter((item.request_id, item.kind) for item in await stream_items(region, ACCOUNT))


def link_keys(region: Region, ids: dict[str, str]) -> dict[str, str | None]:
    """Each request's prompt link key (``core.prompt_links``) as the region's gates make it."""
    key = load_link_key(region.name)
    return {ids[name]: prompt_link_key(key, text) for name, text in PROMPTS.items()}


async def score_links(region: Region) -> dict[tuple[str, str], str | None]:
    """(request id, kind) of the account's own scores on the region's inputs, with the prompt
    link key each carries."""
    return {(s.observation.request_id, s.observation.content_kind): s.observation.prompt_link
            for s in await input_signals(region, 100, wait_s=1)
            if isinstance(s.observation, ScoreRecorded)
            and s.account_id == ACCOUNT}


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def create_and_kill(region: Region, nats_url: str, upstream: str, log: Path) -> str:
    """A batch created through a ``safeguards proxy`` process, killed (SIGKILL) as soon as the
    creation is answered; the batch id."""
    port = free_port()
    proc = _spawn(["proxy", "--region", region.name, "--upstream", upstream, "--nats", nats_url,
                   "--port", str(port), "--caller-auth", "loopback"], log)
    try:
        wait_for_port("127.0.0.1", port, 60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while (await http.get(url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, f"not ready: see {log}"
                await anyio.sleep(0.1)
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="sk-test", max_retries=0,
                                       default_headers={"x-csp-account-id": ACCOUNT})
        batch = await sdk.messages.batches.create(
            requests=[request(name, text) for name, text in PROMPTS.items()])
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown: whatever it still held is gone
        proc.wait(20)
    assert proc.returncode == -signal.SIGKILL
    return batch.id


@pytest.mark.slow
async def test_prompts_of_a_batch_whose_proxy_was_killed_are_scored_once(
        proxy_env: ProxyEnv, region: Region, nats_url: str, classifier_env: ClassifierEnv,
        test_policy: Policy, tmp_path: Path) -> None:
    policy = patient(test_policy)
    await region.enforce(ACCOUNT, 0, 1)
    async with upstream_only(proxy_env, policy) as upstream:
        batch_id = await create_and_kill(region, nats_url, upstream, tmp_path / "proxy.log")
        ids = {name: f"{batch_id}/{name}" for name in PROMPTS}
        # every admitted prompt was on the content stream when the creation was answered, with
        # its link key (the HMAC, never text), which its score carries to the account
        assert await content(region) == Counter({(i, "prompt"): 1 for i in ids.values()})
        on_stream = await stream_items(region, ACCOUNT)
        assert {i.request_id: i.prompt_link for i in on_stream} == link_keys(region, ids)
        async with proxy_env(upstream_url_override=upstream, policy=policy) as reader:
            await eventually(lambda: reader.proxy.gate.held_version(ACCOUNT) == 1)
            results = {r.custom_id: r.result async for r in
                       await client(reader, ACCOUNT).messages.batches.results(batch_id)}
            assert {n: r.type for n, r in results.items()} == dict.fromkeys(PROMPTS, "succeeded")
            assert reader.proxy.batches.unknown_results == 0  # the record the killed one wrote
            await eventually(lambda: reader.proxy.telemetry.sent >= 4, 10)
        # the read sent each request's signal and completion, and no prompt again
        assert await content(region) == Counter(
            {(i, kind): 1 for i in ids.values() for kind in ("prompt", "completion")})
        signals = await observed(region, ACCOUNT)
        assert sorted((sid, o.prompt_chars) for sid, o in signals) == sorted(
            (f"req:{ids[name]}", len(text)) for name, text in PROMPTS.items())
        async with classifier_env():  # the scores reach the account's inputs
            want = {(i, kind) for i in ids.values() for kind in ("prompt", "completion")}
            found: set[tuple[str, str]] = set()
            for _ in range(100):
                found |= await scored(region, ACCOUNT)
                if want <= found:
                    break
                await anyio.sleep(0.3)
        assert found == want
        # the prompts' scores carry their link keys (a flagged one links the account to the
        # prompt's history though its request is observed only later); completions' none
        links = link_keys(region, ids)
        assert await score_links(region) == {
            (i, kind): links[i] if kind == "prompt" else None for i, kind in want}


async def test_each_stored_prompt_carries_its_link_key(proxy_env: ProxyEnv,
                                                       region: Region) -> None:
    """The content item of each admitted prompt, stored at the creation, carries the prompt's
    link key, so that its score, which reaches the account before the request's signal (sent
    with the results), links a flagged prompt to the prompt's history."""
    async with proxy_env() as running:
        batch = await client(running, ACCOUNT).messages.batches.create(
            requests=[request(name, text) for name, text in PROMPTS.items()])
        assert running.proxy.batches.held_chars == 0  # all stored: none held
    ids = {name: f"{batch.id}/{name}" for name in PROMPTS}
    stored = [i for i in await stream_items(region, ACCOUNT)
              if i.request_id.startswith(batch.id + "/")]
    assert {i.request_id: (i.kind, i.prompt_link) for i in stored} == {
        i: ("prompt", link) for i, link in link_keys(region, ids).items()}
    assert all(link is not None for link in link_keys(region, ids).values())


async def test_a_prompt_the_content_stream_does_not_store_stays_held_and_is_counted(
        proxy_env: ProxyEnv, region: Region, caplog: pytest.LogCaptureFixture) -> None:
    """No stream stores the region's content (deleted here): the creation is still answered
    (the upstream took the batch), its prompt is held in memory as before, counted and logged
    without its text."""
    async with proxy_env() as running:
        await region.nc.jetstream().delete_stream(stream_name(region.name, "CONTENT"))
        batch = await client(running, ACCOUNT).messages.batches.create(
            requests=[request("plain", PROMPTS["plain"])])
        batches = running.proxy.batches
        assert batches.known(batch.id) and batches.held_chars == len(PROMPTS["plain"])
        assert batches.prompts is not None and batches.prompts.published == 0
        assert batches.prompts.unpublished == {"no_stream": 1}
        metrics = running.proxy.metrics.render().decode()
        assert 'safeguards_csp_batch_prompts_unpublished_total{reason="no_stream"} 1.0' in metrics
    noted = [r.getMessage() for r in caplog.records if r.name.endswith("batch_prompts")]
    assert len(noted) == 1 and "no_stream" in noted[0] and BENIGN not in noted[0]
