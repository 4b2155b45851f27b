"""Providers' batch jobs' outputs observed off the status poll's path (``job_outputs``): the poll is
answered while the output's read is held up by a slow store (the Cloud Storage emulator behind a
relay that holds each object's download), at most ``in_flight`` observations run at once and a
job is not observed twice at once, a clean shutdown drains an observation in flight or cancels it
unnoted, a job whose observation was cancelled is observed by the next poll on another gate,
each record once, and a job observed twice (its note unread) is taken once by the account's actor
(the same signal ids)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from csp_testkit import Region, RunningProxy, eventually
from jobs_testkit import (
    BENIGN,
    BUCKET,
    CANARY,
    REPLY,
    VERTEX_JOBS,
    content,
    gcs_emulator,
    gcs_io,
    idle,
    relayed_gcs,
    signals,
    vertex_job,
)

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.csp.batch_ledger import result_request_id
from safeguards.adapters.csp.gcs_store import GcsConfig, GcsReader
from safeguards.adapters.csp.job_outputs import JobOutputs, record_custom_id
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.events import RequestObserved
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
TOKEN = "Bearer ya29.poller"


class Store:
    """The emulator behind its relay: ``hold.clear()`` holds each object's download."""

    def __init__(self, relay: str, hold: threading.Event,
                 io: tuple[Callable[[str], bytes], Callable[[str, bytes], None]],
                 seen: list[str | None]) -> None:
        self.relay, self.hold, self.seen = relay, hold, seen  # seen: each read's token
        self.read, self.write = io


@contextlib.contextmanager
def store() -> Any:
    hold = threading.Event()
    hold.set()  # the creation's input read passes
    with gcs_emulator() as emulator, relayed_gcs(emulator, hold) as (relay, seen):
        yield Store(relay, hold, gcs_io(emulator), seen)


async def ended_job(running: RunningProxy, http: httpx.AsyncClient, gcs: Store,
                    account: str, records: int = 2) -> str:
    """A Vertex job created through ``running`` (its input read through the relay) and run
    by the upstream stand-in; its resource name."""
    running.proxy.jobs.gcs = GcsReader(GcsConfig(endpoint_url=gcs.relay))
    lines = [{"custom_id": f"request-{i}", "request": {
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
        "messages": [{"role": "user", "content": CANARY + BENIGN}]}} for i in range(records)]
    uri = f"gs://{BUCKET}/in/{account}.jsonl"
    await anyio.to_thread.run_sync(gcs.write, uri, b"".join(
        json.dumps(line).encode() + b"\n" for line in lines))
    created = await http.post(VERTEX_JOBS, json=vertex_job(uri), headers=headers(account))
    assert created.status_code == 200, created.text
    name: str = created.json()["name"]
    await anyio.to_thread.run_sync(
        lambda: running.upstream.jobs.complete(name, gcs.read, gcs.write, reply=REPLY))
    return name


def headers(account: str) -> dict[str, str]:
    return {"x-csp-account-id": account, "authorization": TOKEN}


async def poll(http: httpx.AsyncClient, name: str, account: str) -> None:
    got = await http.get(f"/v1/{name}", headers=headers(account))
    assert got.status_code == 200 and got.json()["state"] == "JOB_STATE_SUCCEEDED"


@contextlib.asynccontextmanager
async def client(running: RunningProxy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
        yield http


async def test_the_poll_is_answered_while_a_slow_output_is_read(
        proxy_env: ProxyEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            outputs = running.proxy.jobs.outputs
            outputs.in_flight = 1
            first = await ended_job(running, http, gcs, "acct-slow")
            second = await ended_job(running, http, gcs, "acct-slow2")
            gcs.hold.clear()  # the store holds each download
            await poll(http, first, "acct-slow")  # answered, the output still being read
            assert outputs.observing == {first} and outputs.counts["completions"] == 0
            await poll(http, first, "acct-slow")  # not started twice
            await poll(http, second, "acct-slow2")  # over the bound: left for its next poll
            assert outputs.observing == {first}
            assert outputs.unobserved == Counter({"busy": 1})
            assert "ya29" not in repr(vars(outputs))  # the token is the task's, never kept
            gcs.hold.set()
            await idle(outputs)
            assert outputs.counts == Counter({"jobs": 1, "completions": 2})
            await poll(http, second, "acct-slow2")
            await idle(outputs)
            assert outputs.counts == Counter({"jobs": 2, "completions": 4})
            records = running.proxy.batches.records
            assert records is not None
            assert await records.observed(first) and await records.observed(second)
    assert "ya29" not in caplog.text and CANARY.strip() not in caplog.text


async def test_a_clean_shutdown_waits_for_an_observation_in_flight(
        proxy_env: ProxyEnv, region: Region) -> None:
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-drain")
            upstream = running.proxy.config.upstream_url
            async with proxy_env(upstream_url_override=upstream,
                                 job_outputs_drain_s=60.0) as other:
                other.proxy.jobs.gcs = running.proxy.jobs.gcs
                async with client(other) as other_http:
                    gcs.hold.clear()
                    await poll(other_http, name, "acct-drain")
                    assert other.proxy.jobs.outputs.observing == {name}
                # the shutdown starts with the output still held; released while it drains
                threading.Timer(0.5, gcs.hold.set).start()
            assert other.proxy.jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
            records = running.proxy.batches.records
            assert records is not None and await records.observed(name)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    assert sorted(o.request_id for o in await signals(region, "acct-drain")) == sorted(ids)


async def test_an_observation_cancelled_at_shutdown_is_observed_once_by_the_next_poll(
        proxy_env: ProxyEnv, region: Region, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-cut", records=3)
            upstream = running.proxy.config.upstream_url
            async with proxy_env(upstream_url_override=upstream,
                                 job_outputs_drain_s=0.2) as other:
                other.proxy.jobs.gcs = running.proxy.jobs.gcs
                async with client(other) as other_http:
                    gcs.hold.clear()
                    await poll(other_http, name, "acct-cut")
                    assert other.proxy.jobs.outputs.observing == {name}
            # shut down mid-read: cancelled after its drain, the job not noted as observed
            assert other.proxy.jobs.outputs.counts == Counter()
            assert "left for their next poll" in caplog.text
            records = running.proxy.batches.records
            assert records is not None and not await records.observed(name)
            gcs.hold.set()
            await poll(http, name, "acct-cut")  # the next poll, on another gate
            await idle(running.proxy.jobs.outputs)
            assert running.proxy.jobs.outputs.counts == Counter({"jobs": 1, "completions": 3})
            assert await records.observed(name)
            await running.proxy.telemetry.settle(5)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(3)}
    observed = await signals(region, "acct-cut")
    assert sorted(o.request_id for o in observed) == sorted(ids)  # each record once
    items = Counter((i.request_id, i.kind) for i in await content(region, "acct-cut"))
    assert items == Counter({(i, k): 1 for i in ids for k in ("prompt", "completion")})


SECRET = CANARY + "a message that must not be logged"


async def test_a_job_observed_twice_is_taken_once_by_the_accounts_actor(
        proxy_env: ProxyEnv, region: Region, nats_url: str) -> None:
    """A re-observation (a gate that did not read the ledger's note; a process killed after
    queueing some records) sends the same signal ids and content ids: the actor takes each
    record's RequestObserved once, its inbox deduplicating the second."""
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-twice")
            await poll(http, name, "acct-twice")
            await idle(running.proxy.jobs.outputs)
            upstream = running.proxy.config.upstream_url
            async with proxy_env(upstream_url_override=upstream) as other, \
                    client(other) as other_http:
                other.proxy.jobs.gcs = running.proxy.jobs.gcs
                other.proxy.batches.records = None  # the ledger's note unread
                await poll(other_http, name, "acct-twice")
                await idle(other.proxy.jobs.outputs)
                assert other.proxy.jobs.outputs.counts["completions"] == 2
                await other.proxy.telemetry.settle(5)
            await running.proxy.telemetry.settle(5)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    observed = await signals(region, "acct-twice")
    assert Counter(o.request_id for o in observed) == {i: 2 for i in ids}  # sent twice
    items = Counter((i.request_id, i.kind) for i in await content(region, "acct-twice"))
    assert items == Counter({**{(i, "prompt"): 1 for i in ids},
                             **{(i, "completion"): 2 for i in ids}})  # scored under one id
    events = InMemoryEventStore(region.name)
    node = Node(region=region.name, partitions=running.proxy.config.partitions,
                bus=NatsBus(nats_url, region.name), store=events, policy=region.policy,
                settings=NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2),
                static_partitions=range(running.proxy.config.partitions),
                producers=load_producer_keys(region.name))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await eventually(lambda: node.metrics.committed + node.metrics.duplicates >= 4, 30)
        node.request_stop()
    assert (node.metrics.committed, node.metrics.duplicates) == (2, 2)
    history = [e.body for e in await events.history("acct-twice")]
    taken = [b.request_id for b in history if isinstance(b, RequestObserved)]
    assert sorted(taken) == sorted(ids)  # each record once


async def test_a_job_observed_by_two_gates_at_once_charges_its_tokens_once(
        proxy_env: ProxyEnv, region: Region) -> None:
    """Two gates' observations of one job both pass the ledger's check before either notes it
    (their output reads held until both have started): both queue its records (the actor takes
    them once), one creates the note and charges the records' tokens, the other finds the note
    and charges nothing."""
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-racing")
            jobs = running.proxy.jobs
            first = jobs.outputs
            second = JobOutputs(running.proxy.batches, lambda: jobs.s3, lambda: jobs.gcs)
            async with second.running():
                gcs.hold.clear()
                seen = len(gcs.seen)
                for outputs in (first, second):
                    jobs.outputs = outputs
                    await poll(http, name, "acct-racing")
                # each has listed the output and waits on its object: past the ledger's check
                await eventually(lambda: len(gcs.seen) >= seen + 4, 30)
                gcs.hold.set()
                await idle(first)
                await idle(second)
            for outputs in (first, second):
                assert outputs.counts == Counter({"jobs": 1, "completions": 2})
            per_record = 10 + len(REPLY) // 4  # the stand-in's usage
            assert sorted((first.charged, second.charged)) == [0, 2 * per_record]
            assert running.proxy.batches.records is not None
            assert await running.proxy.batches.records.observed(name)
            await running.proxy.telemetry.settle(5)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    observed = await signals(region, "acct-racing")
    assert Counter(o.request_id for o in observed) == {i: 2 for i in ids}  # sent by each


async def test_a_job_is_noted_only_once_every_records_messages_were_stored(
        proxy_env: ProxyEnv, region: Region) -> None:
    """The ledger's note waits for JetStream's acknowledgement of each record's messages: while
    the region's content stream refuses the completions (a message size it does not take), the
    job is left unnoted and uncharged (counted ``unstored``), and its next poll, the stream
    taking them again, stores each completion, notes the job and charges it."""
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-unstored")
            outputs = running.proxy.jobs.outputs
            records = running.proxy.batches.records
            assert records is not None
            js = region.nc.jetstream()
            config = (await js.stream_info(stream_name(region.name, "CONTENT"))).config
            await js.update_stream(dataclasses.replace(config, max_msg_size=64))
            await poll(http, name, "acct-unstored")
            await idle(outputs)
            assert outputs.unobserved["unstored"] >= 1 and outputs.counts["jobs"] == 0
            assert outputs.charged == 0 and not await records.observed(name)
            await js.update_stream(config)
            await poll(http, name, "acct-unstored")
            await idle(outputs)
            assert outputs.counts["jobs"] == 1 and await records.observed(name)
            assert outputs.charged == 2 * (10 + len(REPLY) // 4)  # the stand-in's usage
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    items = [i for i in await content(region, "acct-unstored") if i.kind == "completion"]
    assert sorted(i.request_id for i in items) == sorted(ids)  # each stored, by the second


class BrokenReader(GcsReader):
    """A reader that fails as no store does (a bug below the observation)."""

    async def read_folder(self, folder: object, authorization: list[str]
                          ) -> list[tuple[str, bytes]]:
        raise RuntimeError(SECRET)


async def test_an_error_in_the_background_is_counted_logged_without_text_and_retried(
        proxy_env: ProxyEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with store() as gcs:
        async with proxy_env() as running, client(running) as http:
            name = await ended_job(running, http, gcs, "acct-error")
            outputs = running.proxy.jobs.outputs
            running.proxy.jobs.gcs = BrokenReader(GcsConfig(endpoint_url=gcs.relay))
            for _ in range(2):  # each poll answered; each tries again
                await poll(http, name, "acct-error")
                await idle(outputs)
            assert outputs.unobserved == Counter({"error": 2})
            metric = running.proxy.metrics.job_outputs_unobserved.labels("error")
            assert metric._value.get() == 2
            running.proxy.jobs.gcs = GcsReader(GcsConfig(endpoint_url=gcs.relay))
            await poll(http, name, "acct-error")
            await idle(outputs)
            assert outputs.counts == Counter({"jobs": 1, "completions": 2})
    assert "RuntimeError" in caplog.text and "in read_folder" in caplog.text  # its frames
    assert CANARY.strip() not in caplog.text and "must not be logged" not in caplog.text
