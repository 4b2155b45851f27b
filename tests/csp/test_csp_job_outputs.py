"""Providers' batch jobs' outputs observed after the fact (``job_outputs``): a job created through
the proxy, run by the upstream stand-in (each record answered, the output written where the
provider writes it), and the caller's poll of its status through the proxy observes each record's
completion once: its RequestObserved signal (tokens) under the record's result id, its
completion on the region's content stream. Bedrock: moto's server with IAM's policies enforced
(the output read as the job's role, never as the gate); Vertex: the Cloud Storage emulator behind
a relay that records the token each read carried (the caller's own)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from csp_testkit import Region, RunningProxy
from jobs_testkit import (
    BENIGN,
    BUCKET,
    CANARY,
    REPLY,
    VERTEX_JOBS,
    aws,
    bedrock,
    content,
    create,
    gcs_emulator,
    gcs_io,
    idle,
    killed_proxy,
    moto_server,
    record,
    relayed_gcs,
    s3_io,
    s3_reader,
    signals,
    vertex_job,
)

from safeguards.adapters.csp.batch_ledger import result_request_id
from safeguards.adapters.csp.gcs_store import GcsConfig, GcsReader
from safeguards.adapters.csp.job_outputs import JobOutputs, record_custom_id

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]

ROLES = "arn:aws:iam::123456789012:role/"
READER, INPUT_ONLY = ROLES + "out-reader", ROLES + "input-only"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})


def _policy(action: str | list[str], resource: str | list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": action, "Resource": resource}]})


@pytest.fixture(scope="module")
def iam() -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """moto's server with IAM enforced once set up: the gate's keys (may assume ``out-reader``
    and ``input-only``, may read nothing) and the provider's (the stand-in's: S3 at will)."""
    with moto_server() as url:
        aws(url, "s3").create_bucket(Bucket=BUCKET)
        client = aws(url, "iam")
        keys = []
        for user, action, resource in (("gate", "sts:AssumeRole", [READER, INPUT_ONLY]),
                                       ("provider", "s3:*", "*")):
            client.create_user(UserName=user)
            made = client.create_access_key(UserName=user)["AccessKey"]
            client.put_user_policy(UserName=user, PolicyName="p",
                                   PolicyDocument=_policy(action, resource))
            keys.append({"aws_access_key_id": made["AccessKeyId"],
                         "aws_secret_access_key": made["SecretAccessKey"]})
        for name, resource in (("out-reader", [f"arn:aws:s3:::{BUCKET}",
                                               f"arn:aws:s3:::{BUCKET}/*"]),
                               ("input-only", f"arn:aws:s3:::{BUCKET}/in/*")):
            client.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
            # (moto checks a ListObjectsV2 call against s3:ListObjectsV2, S3 against
            # s3:ListBucket: the role is granted both)
            client.put_role_policy(RoleName=name, PolicyName="io", PolicyDocument=_policy(
                ["s3:GetObject", "s3:ListBucket", "s3:ListObjectsV2"], resource))
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()
        yield url, keys[0], keys[1]


def put(url: str, keys: dict[str, str], key: str, lines: list[dict[str, Any]]) -> str:
    """A job's input written with the provider's keys (IAM enforced)."""
    uri = f"s3://{BUCKET}/{key}"
    s3_io(url, **keys)[1](uri, b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    return uri


async def test_an_ended_bedrock_jobs_output_is_observed_once_read_as_its_role(
        proxy_env: ProxyEnv, region: Region, iam: tuple[str, dict[str, str], dict[str, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, gate_keys, provider_keys = iam
    records = [record(f"CALL{i:07d}", BENIGN) for i in range(2)]
    uri = put(url, provider_keys, "in/outputs.jsonl", records)
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        jobs = running.proxy.jobs
        jobs.s3 = s3_reader(url, gate_keys)
        client = bedrock(running, "acct-out")
        arn = (await create(client, uri, READER))["jobArn"]

        async def poll() -> str:
            """The job's status; the observation it started in the background waited for."""
            got = await anyio.to_thread.run_sync(
                lambda: client.get_model_invocation_job(jobIdentifier=arn))
            await idle(jobs.outputs)
            return str(got["status"])

        assert await poll() == "Submitted" and jobs.outputs.counts["jobs"] == 0
        await anyio.to_thread.run_sync(lambda: running.upstream.jobs.complete(
            arn, *s3_io(url, **provider_keys), reply=REPLY))
        assert await poll() == "Completed"  # the poll observes the ended job's output
        assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
        assert running.proxy.batches.records is not None
        assert await running.proxy.batches.records.observed(arn)  # noted for other gates
        first = jobs.outputs
        assert first.stored == 4  # each record's signal and completion, acknowledged
        await running.proxy.telemetry.settle(5)
        sent = running.proxy.telemetry.sent
        assert await poll() == "Completed"  # a second poll adds nothing
        # another gate (nothing in its memory): the region's ledger says the job was observed
        other = JobOutputs(running.proxy.batches, lambda: jobs.s3, lambda: jobs.gcs)
        async with other.running():
            jobs.outputs = other
            assert await poll() == "Completed"
        assert jobs.outputs.counts == Counter() and jobs.outputs.stored == 0
        await running.proxy.telemetry.settle(5)
        assert running.proxy.telemetry.sent == sent and first.stored == 4
        assert not jobs.outputs.unobserved
    ids = {result_request_id(arn, record_custom_id(r["recordId"])) for r in records}
    observed = await signals(region, "acct-out")
    assert sorted(o.request_id for o in observed) == sorted(ids)  # each record once
    assert all(o.output_tokens > 0 and o.action == "allow" for o in observed)
    assert all(o.surface == "proxy/batch" for o in observed)
    items = Counter((i.request_id, i.kind) for i in await content(region, "acct-out"))
    assert items == Counter({(i, k): 1 for i in ids for k in ("prompt", "completion")})
    completions = [i for i in await content(region, "acct-out") if i.kind == "completion"]
    assert {i.text for i in completions} == {REPLY}
    assert CANARY.strip() not in caplog.text


@pytest.mark.slow  # a fault test: SIGKILLs a proxy process
async def test_a_proxy_killed_mid_observation_leaves_the_job_to_the_next_poll(
        proxy_env: ProxyEnv, region: Region, nats_url: str, tmp_path: Path,
        iam: tuple[str, dict[str, str], dict[str, str]]) -> None:
    """A ``safeguards proxy`` process answers the poll of an ended job and is killed (SIGKILL) at
    once, its observation cut short (its output listing waits on a store that never answers)
    and its ledger note never written: the next poll, on another gate, observes each record
    once."""
    url, gate_keys, provider_keys = iam
    records = [record(f"KILL{i:07d}", BENIGN) for i in range(2)]
    uri = put(url, provider_keys, "in/killed.jsonl", records)
    async with proxy_env() as running:
        jobs = running.proxy.jobs
        jobs.s3 = s3_reader(url, gate_keys)
        arn = (await create(bedrock(running, "acct-killed"), uri, READER))["jobArn"]
        await anyio.to_thread.run_sync(lambda: running.upstream.jobs.complete(
            arn, *s3_io(url, **provider_keys), reply=REPLY))
        # the killed process's reads go to a store that never answers: its observation cannot
        # finish (and note the job) before the kill, however fast the machine
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hole = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {"AWS_ENDPOINT_URL_S3": hole, "AWS_ENDPOINT_URL_STS": url,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID":
               gate_keys["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY":
               gate_keys["aws_secret_access_key"]}
        async with killed_proxy(region.name, nats_url, running.proxy.config.upstream_url,
                                tmp_path / "proxy.log", env) as killed:
            client = bedrock(killed, "acct-killed")
            got = await anyio.to_thread.run_sync(
                lambda: client.get_model_invocation_job(jobIdentifier=arn))
            assert got["status"] == "Completed"  # answered; killed as the answer arrives
        silent.close()
        assert running.proxy.batches.records is not None
        assert not await running.proxy.batches.records.observed(arn)  # never noted
        client = bedrock(running, "acct-killed")
        got = await anyio.to_thread.run_sync(
            lambda: client.get_model_invocation_job(jobIdentifier=arn))
        await idle(jobs.outputs)
        assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
        assert await running.proxy.batches.records.observed(arn)
        await running.proxy.telemetry.settle(5)
    ids = {result_request_id(arn, record_custom_id(r["recordId"])) for r in records}
    observed = await signals(region, "acct-killed")
    assert sorted(o.request_id for o in observed) == sorted(ids)  # each record once
    items = Counter((i.request_id, i.kind) for i in await content(region, "acct-killed"))
    assert items == Counter({(i, k): 1 for i in ids for k in ("prompt", "completion")})


async def test_an_output_the_jobs_role_may_not_read_is_counted_and_the_poll_answered(
        proxy_env: ProxyEnv, iam: tuple[str, dict[str, str], dict[str, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, gate_keys, provider_keys = iam
    uri = put(url, provider_keys, "in/refused.jsonl", [record("CALL0000001", BENIGN)])
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        jobs = running.proxy.jobs
        jobs.s3 = s3_reader(url, gate_keys)
        client = bedrock(running, "acct-out-refused")
        arn = (await create(client, uri, INPUT_ONLY))["jobArn"]  # its input, not its output
        await anyio.to_thread.run_sync(lambda: running.upstream.jobs.complete(
            arn, *s3_io(url, **provider_keys), reply=REPLY))
        for _ in range(2):  # refused on each poll, each answered as the upstream answered it
            got = await anyio.to_thread.run_sync(
                lambda: client.get_model_invocation_job(jobIdentifier=arn))
            assert got["status"] == "Completed"
            await idle(jobs.outputs)
        assert jobs.outputs.unobserved == Counter({"access_refused": 2})
        assert jobs.outputs.counts["completions"] == 0
        metric = running.proxy.metrics.job_outputs_unobserved.labels("access_refused")
        assert metric._value.get() == 2
    assert "AccessDenied" in caplog.text and CANARY.strip() not in caplog.text


async def test_an_ended_vertex_jobs_output_is_read_with_the_pollers_token(
        proxy_env: ProxyEnv, region: Region, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with gcs_emulator() as emulator, relayed_gcs(emulator) as (relay, seen):
        read, write = gcs_io(emulator)
        lines = [{"custom_id": f"request-{i}", "request": {
            "anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
            "messages": [{"role": "user", "content": CANARY + BENIGN}]}} for i in range(2)]
        await anyio.to_thread.run_sync(write, f"gs://{BUCKET}/in/outputs.jsonl", b"".join(
            json.dumps(line).encode() + b"\n" for line in lines))
        async with proxy_env() as running, httpx.AsyncClient(base_url=running.url) as http:
            jobs = running.proxy.jobs
            jobs.gcs = GcsReader(GcsConfig(endpoint_url=relay))
            token = {"x-csp-account-id": "acct-vout", "authorization": "Bearer ya29.poller"}
            created = await http.post(VERTEX_JOBS, json=vertex_job(
                f"gs://{BUCKET}/in/outputs.jsonl"), headers=token)
            assert created.status_code == 200, created.text
            name = created.json()["name"]
            out = await anyio.to_thread.run_sync(
                lambda: running.upstream.jobs.complete(name, read, write, reply=REPLY))
            # a line that is not a record, in another output file: counted, never observed
            await anyio.to_thread.run_sync(write, out.replace("00001", "00002"),
                                           b"{not json " + CANARY.encode() + b"\n")
            seen.clear()
            untokened = await http.get(f"/v1/{name}", headers={"x-csp-account-id": "acct-vout"})
            assert untokened.json()["state"] == "JOB_STATE_SUCCEEDED"
            await idle(jobs.outputs)
            assert jobs.outputs.unobserved == Counter({"access_refused": 1}) and not seen
            for _ in range(2):  # observed on the first poll with a token only
                got = await http.get(f"/v1/{name}", headers=token)
                assert got.json()["state"] == "JOB_STATE_SUCCEEDED"
                await idle(jobs.outputs)
            assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
            assert jobs.outputs.unobserved == Counter({"access_refused": 1, "malformed": 1})
            assert seen and set(seen) == {"Bearer ya29.poller"}  # listed and read as the caller
            await running.proxy.telemetry.settle(5)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    observed = await signals(region, "acct-vout")
    assert sorted(o.request_id for o in observed) == sorted(ids)
    assert all(o.output_tokens > 0 for o in observed)
    items = [i for i in await content(region, "acct-vout") if i.kind == "completion"]
    assert sorted(i.request_id for i in items) == sorted(ids)
    assert "ya29" not in caplog.text and CANARY.strip() not in caplog.text
