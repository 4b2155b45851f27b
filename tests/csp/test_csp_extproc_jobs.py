"""Providers' batch jobs created behind Envoy are observed as on the proxy (``extproc_jobs``): the
real ext_proc gRPC server sees the creation's answer pass (the job's ARN or name) and remembers
the admitted records under it (the region's batch ledger), and a status poll's answer that says
the job ended starts the observation of its output in the background (``job_outputs``), read with
the job's authority: each record's completion observed once. The upstream's answers are the
model stand-in's (``upstream_jobs.JobStore``), its outputs written to moto's S3 and the Cloud
Storage emulator (behind a relay that records the token each read carried)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest
from csp_testkit import Region
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import Exchange, ext_proc, headers, request_body, request_headers
from jobs_testkit import (
    BENIGN,
    BUCKET,
    KEYS,
    REPLY,
    VERTEX_JOBS,
    aws,
    content,
    gcs_emulator,
    gcs_io,
    idle,
    job,
    moto_server,
    put_input,
    record,
    relayed_gcs,
    s3_io,
    s3_reader,
    signals,
    vertex_job,
)

from safeguards.adapters.csp.batch_ledger import result_request_id
from safeguards.adapters.csp.bedrock_api import BEDROCK_API
from safeguards.adapters.csp.gcs_store import GcsConfig, GcsReader
from safeguards.adapters.csp.job_outputs import record_custom_id
from safeguards.adapters.csp.upstream_jobs import JobStore
from safeguards.adapters.csp.vertex_api import VERTEX_API
from safeguards.core.policy import Policy


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_server() as url:
        aws(url, "s3").create_bucket(Bucket=BUCKET)
        yield url


async def answered(ex: Exchange, status: int, answer: bytes) -> None:
    """The upstream's answer through ext_proc, in two chunks: each passed unchanged."""
    r = await ex.send(pb.ProcessingRequest(response_headers=headers(
        {":status": str(status), "content-type": "application/json"})))
    assert r.HasField("response_headers")
    for piece, end in ((answer[:7], False), (answer[7:], True)):
        r = await ex.send(pb.ProcessingRequest(response_body=pb.HttpBody(
            body=piece, end_of_stream=end)))
        assert not r.response_body.response.HasField("body_mutation")
    await ex.close()


async def test_a_bedrock_job_created_behind_envoy_is_observed_when_a_poll_finds_it_ended(
        region: Region, nats_url: str, test_policy: Policy, s3_url: str) -> None:
    records = [record(f"ENVY{i:07d}", BENIGN) for i in range(2)]
    uri = put_input(s3_url, "envoy-out.jsonl", records)
    upstream = JobStore()
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        jobs = server.service.jobs
        jobs.s3 = s3_reader(s3_url, KEYS)
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers("acct-envoy-out", path="/model-invocation-job"))
        # the job's answers are read: the upstream is asked for them unencoded
        assert "accept-encoding" in r.request_headers.response.header_mutation.remove_headers
        r = await ex.send(request_body(job(uri)))
        assert r.HasField("request_body") and not r.request_body.response.body_mutation.body
        status, answer, _ = upstream.create(BEDROCK_API, "/model-invocation-job",
                                            json.dumps(job(uri)).encode())
        await answered(ex, status, answer)
        arn = json.loads(answer)["jobArn"]
        assert server.service.batches.known(arn)  # remembered under its ARN
        ledger = server.service.batches.records
        assert ledger is not None and await ledger.get(arn) is not None

        async def poll() -> str:
            """The job's status polled through ext_proc; its observation waited for."""
            path = "/model-invocation-job/" + arn.rsplit("/", 1)[-1]
            ex = Exchange(stub.Process())
            r = await ex.send(request_headers("acct-envoy-out", path=path, method="GET",
                                              end=True))
            assert r.HasField("request_headers")
            status, answer, _ = upstream.read(BEDROCK_API, "GET", path)
            await answered(ex, status, answer)
            await idle(jobs.outputs)
            return str(json.loads(answer)["status"])

        assert await poll() == "Submitted" and jobs.outputs.counts["jobs"] == 0
        await anyio.to_thread.run_sync(lambda: upstream.complete(arn, *s3_io(s3_url),
                                                                 reply=REPLY))
        assert await poll() == "Completed"
        assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
        assert await ledger.observed(arn)  # noted for the other gates
        assert await poll() == "Completed"  # a second poll adds nothing
        assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
        assert not jobs.outputs.unobserved
        await server.telemetry.settle(5)
    ids = {result_request_id(arn, record_custom_id(r["recordId"])) for r in records}
    observed = await signals(region, "acct-envoy-out")
    assert sorted(o.request_id for o in observed) == sorted(ids)  # each record once, answered
    assert all(o.output_tokens > 0 and o.action == "allow" for o in observed)
    items = Counter((i.request_id, i.kind) for i in await content(region, "acct-envoy-out"))
    assert items == Counter({(i, k): 1 for i in ids for k in ("prompt", "completion")})


async def test_a_job_the_upstream_did_not_take_behind_envoy_is_observed_as_not_served(
        region: Region, nats_url: str, test_policy: Policy, s3_url: str) -> None:
    uri = put_input(s3_url, "envoy-untaken.jsonl",
                    [record(f"UNTK{i:07d}", BENIGN) for i in range(3)])
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        server.service.jobs.s3 = s3_reader(s3_url, KEYS)
        ex = Exchange(stub.Process())
        await ex.send(request_headers("acct-envoy-untaken", path="/model-invocation-job"))
        assert (await ex.send(request_body(job(uri)))).HasField("request_body")
        answer = BEDROCK_API.error(429, "too many jobs")
        await answered(ex, answer.status, answer.body)
        await server.telemetry.settle(5)
    observed = await signals(region, "acct-envoy-untaken")
    assert len(observed) == 3  # each record once, as a request not served
    assert all(o.output_tokens == 0 and o.input_tokens == 0 for o in observed)


async def test_a_vertex_job_created_behind_envoy_is_observed_with_the_pollers_token(
        region: Region, nats_url: str, test_policy: Policy) -> None:
    upstream = JobStore()
    token = "Bearer ya29.poller"
    with gcs_emulator() as emulator, relayed_gcs(emulator) as (relay, seen):
        read, write = gcs_io(emulator)
        lines = [{"custom_id": f"request-{i}", "request": {
            "anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
            "messages": [{"role": "user", "content": BENIGN}]}} for i in range(2)]
        uri = f"gs://{BUCKET}/in/envoy.jsonl"
        await anyio.to_thread.run_sync(write, uri, b"".join(
            json.dumps(line).encode() + b"\n" for line in lines))
        async with ext_proc(region, nats_url, test_policy) as (server, stub):
            jobs = server.service.jobs
            jobs.gcs = GcsReader(GcsConfig(endpoint_url=relay))

            def asked(method: str, path: str) -> pb.ProcessingRequest:
                return pb.ProcessingRequest(request_headers=headers({
                    ":method": method, ":path": path, "content-type": "application/json",
                    "x-csp-account-id": "acct-envoy-vout", "authorization": token},
                    end=method == "GET"))

            ex = Exchange(stub.Process())
            assert (await ex.send(asked("POST", VERTEX_JOBS))).HasField("request_headers")
            assert (await ex.send(request_body(vertex_job(uri)))).HasField("request_body")
            status, answer, _ = upstream.create(VERTEX_API, VERTEX_JOBS,
                                                json.dumps(vertex_job(uri)).encode())
            await answered(ex, status, answer)
            name = json.loads(answer)["name"]
            assert server.service.batches.known(name)
            await anyio.to_thread.run_sync(
                lambda: upstream.complete(name, read, write, reply=REPLY))
            seen.clear()
            ex = Exchange(stub.Process())
            assert (await ex.send(asked("GET", f"/v1/{name}"))).HasField("request_headers")
            status, answer, _ = upstream.read(VERTEX_API, "GET", f"/v1/{name}")
            assert json.loads(answer)["state"] == "JOB_STATE_SUCCEEDED"
            await answered(ex, status, answer)
            await idle(jobs.outputs)
            assert jobs.outputs.counts == Counter({"jobs": 1, "completions": 2})
            assert seen and set(seen) == {token}  # the output read as the poller
            await server.telemetry.settle(5)
    ids = {result_request_id(name, record_custom_id(f"request-{i}")) for i in range(2)}
    observed = await signals(region, "acct-envoy-vout")
    assert sorted(o.request_id for o in observed) == sorted(ids)
    assert all(o.output_tokens > 0 for o in observed)
