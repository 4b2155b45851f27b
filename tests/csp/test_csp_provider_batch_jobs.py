"""Providers' batch jobs through the gate: botocore's own ``bedrock`` client (SigV4 signed,
unmodified) creates Bedrock batch inference jobs at the proxy, whose input files lie in a real
S3-compatible server (moto's, a subprocess); Vertex AI batch prediction jobs (Google's REST
shape) read theirs from a real Cloud Storage emulator (gcp-storage-emulator, a subprocess). Each
record is checked and observed like a single request, and the job goes upstream unchanged only
when every record passes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from csp_testkit import Region, RunningProxy, eventually
from extproc_testkit import Exchange, ext_proc, immediate, request_body, request_headers
from jobs_testkit import (
    BENIGN,
    BOMB,
    BUCKET,
    CANARY,
    MODEL,
    aws,
    bedrock,
    create,
    gcs_emulator,
    gcs_io,
    idle,
    job,
    moto_server,
    put_input,
    record,
    refused,
    s3_io,
)
from nats.js import api

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.gcs_store import GcsConfig, GcsReader
from safeguards.adapters.csp.object_store import ObjectStoreConfig, S3Reader
from safeguards.core.codec import decode_signal
from safeguards.core.events import RequestObserved
from safeguards.core.policy import Policy
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """moto's S3-compatible server (with STS: the input is read as the job's role)."""
    with moto_server() as url:
        aws(url, "s3").create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture(scope="module")
def gcs_url() -> Iterator[str]:
    with gcs_emulator() as url:
        yield url


def reading(running: RunningProxy, url: str, **limits: Any) -> None:
    running.proxy.jobs.s3 = S3Reader(ObjectStoreConfig(
        endpoint_url=url, sts_endpoint_url=url, region="us-east-1", access_key_id="testing",
        secret_access_key="testing", **limits))


async def observed(region: Region, account: str) -> list[str]:
    js = region.nc.jetstream()
    sub = await js.pull_subscribe(f"sg.{region.name}.acct.>",
                                  stream=stream_name(region.name, "INPUTS"),
                                  config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT))
    signals = [decode_signal(m.data) for m in await sub.fetch(20, timeout=5)]
    return sorted(s.observation.action for s in signals
                  if isinstance(s.observation, RequestObserved)
                  and s.observation.surface == "proxy/batch" and s.account_id == account)


async def test_a_benign_job_goes_upstream_unchanged_each_record_observed(
        proxy_env: ProxyEnv, region: Region, s3_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    uri = put_input(s3_url, "benign.jsonl", [record(f"CALL{i:07d}", BENIGN) for i in range(3)])
    caplog.set_level(logging.DEBUG)  # (after the test's own uploads, which botocore logs)
    async with proxy_env() as running:
        reading(running, s3_url)
        client = bedrock(running, "acct-jobs")
        created = await create(client, uri)
        assert created["jobArn"].startswith("arn:aws:bedrock:")
        sent = running.upstream.jobs.last_body
        assert sent is not None and sent.pop("clientRequestToken")  # botocore's idempotency
        assert sent == job(uri)  # the job as the client sent it
        got = await anyio.to_thread.run_sync(
            lambda: client.get_model_invocation_job(jobIdentifier=created["jobArn"]))
        assert got["status"] == "Submitted" and got["modelId"] == MODEL
        assert running.proxy.jobs.counts["forwarded"] == 1
        assert running.proxy.telemetry.sent == 0  # each record's signal comes with its answer
        running.upstream.jobs.complete(created["jobArn"], *s3_io(s3_url))
        ended = await anyio.to_thread.run_sync(
            lambda: client.get_model_invocation_job(jobIdentifier=created["jobArn"]))
        assert ended["status"] == "Completed"
        await idle(running.proxy.jobs.outputs)  # observed in the background (job_outputs)
        assert running.proxy.jobs.outputs.counts["completions"] == 3
        assert running.proxy.jobs.outputs.stored == 6  # signals, completions: acknowledged
    assert await observed(region, "acct-jobs") == ["allow"] * 3
    assert CANARY.strip() not in caplog.text


async def test_a_job_with_a_harmful_record_is_refused_and_never_created(
        proxy_env: ProxyEnv, region: Region, s3_url: str, classifier_env: ClassifierEnv,
        caplog: pytest.LogCaptureFixture) -> None:
    uri = put_input(s3_url, "mixed.jsonl", [record("CALL0000001", BENIGN),
                                            record("CALL0000002", BOMB),
                                            record("CALL0000003", BENIGN)])
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        reading(running, s3_url)
        await region.enforce("acct-l1", 1, 1)  # L1: every prompt classified before it is served
        await region.enforce("acct-bad", 4, 1)  # blocked
        await eventually(lambda: running.proxy.gate.held_version("acct-l1") == 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-bad") == 1)
        async with classifier_env():
            error = await refused(bedrock(running, "acct-l1"), uri)
        assert (error["status"], error["Code"]) == (403, "AccessDeniedException")
        assert error["Message"].startswith("1 of 3 records refused by the safety gate")
        blocked = await refused(bedrock(running, "acct-bad"), uri)
        assert (blocked["status"], blocked["Code"]) == (403, "AccessDeniedException")
        assert running.upstream.jobs.created == 0
        assert running.proxy.gate.counts[("block", "classified_weapons")] == 1
        assert running.proxy.jobs.counts["refused"] == 2
        await eventually(lambda: running.proxy.telemetry.sent >= 3, 10)
    assert await observed(region, "acct-l1") == ["annotate", "annotate", "block"]
    assert CANARY.strip() not in caplog.text + error["Message"]


async def test_a_job_whose_answers_the_gate_would_check_is_refused(
        proxy_env: ProxyEnv, region: Region, s3_url: str, classifier_env: ClassifierEnv,
        test_policy: Policy) -> None:
    """A job's output goes to the customer's bucket, never through the gate: where the account's
    level would check the answers (``terminate_stream``, here on an L1 that adds no safety
    prompt), the gate cannot, so the job is refused (fail closed), each record still observed."""
    rung = test_policy.ladder[1]
    checked = dataclasses.replace(test_policy, ladder=(
        test_policy.ladder[0], dataclasses.replace(
            rung, interventions=(*rung.interventions, "terminate_stream")),
        *test_policy.ladder[2:]))
    uri = put_input(s3_url, "answers.jsonl", [record(f"CALL{i:07d}", BENIGN) for i in range(2)])
    async with proxy_env(policy=checked) as running:
        reading(running, s3_url)
        await dataclasses.replace(region, policy=checked).enforce("acct-checked", 1, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-checked") == 1)
        async with classifier_env():
            error = await refused(bedrock(running, "acct-checked"), uri)
        assert (error["status"], error["Code"]) == (403, "AccessDeniedException")
        assert error["Message"].startswith("2 of 2 records refused by the safety gate: records "
                                           "whose answers the gate must check")
        assert running.upstream.jobs.created == 0
        assert running.proxy.jobs.counts["refused"] == 1
        await eventually(lambda: running.proxy.telemetry.sent >= 4, 10)
    assert await observed(region, "acct-checked") == ["annotate", "annotate"]


async def test_bad_input_is_a_typed_error_in_bedrocks_shape(
        proxy_env: ProxyEnv, s3_url: str, caplog: pytest.LogCaptureFixture) -> None:
    lines = json.dumps(record("CALL0000001", BENIGN)).encode()
    malformed = put_input(s3_url, "malformed.jsonl", lines + b"\n{\"recordId\": " + b"\n")
    oversized = put_input(s3_url, "big.jsonl", [record(f"CALL{i:07d}", BENIGN * 8)
                                                for i in range(4)])
    folder = put_input(s3_url, "folder/a.jsonl", [record("CALL0000001", BENIGN)])
    put_input(s3_url, "folder/b.jsonl", [record("CALL0000002", BENIGN)])
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        reading(running, s3_url, max_bytes=2000)
        client = bedrock(running, "acct-bad-input")
        error = await refused(client, malformed)
        assert (error["status"], error["Code"]) == (400, "ValidationException")
        assert error["Message"] == "input object 1, line 2: not valid JSON"
        error = await refused(client, oversized)
        assert (error["status"], error["Code"]) == (413, "ValidationException")
        assert "exceeds 2000 bytes" in error["Message"]
        running.proxy.jobs.max_records = 1
        error = await refused(client, folder.rsplit("/", 1)[0] + "/")  # two objects, 2 records
        assert (error["status"], error["Code"]) == (413, "ValidationException")
        assert "more than 1 records" in error["Message"]
        # an object the store does not have: a screened (fresh) account fails closed
        error = await refused(client, f"s3://{BUCKET}/missing.jsonl")
        assert (error["status"], error["Code"]) == (503, "ServiceUnavailableException")
        assert "NoSuchKey" in error["Message"]
        error = await refused(client, "https://example.com/input.jsonl")
        assert (error["status"], error["Code"]) == (400, "ValidationException")
        assert running.upstream.jobs.created == 0
        assert running.proxy.jobs.counts["bad_input"] == 4
        assert running.proxy.jobs.counts["unreadable_refused"] == 1
    assert CANARY.strip() not in caplog.text


async def test_jobs_behind_envoy_are_checked_record_by_record(
        region: Region, nats_url: str, test_policy: Policy, s3_url: str) -> None:
    """ext_proc: the creation's body passes unchanged once every record passed; a job it cannot
    check is answered at once in Bedrock's shape; job paths it does not know stay refused."""
    benign = put_input(s3_url, "envoy.jsonl", [record("CALL0000001", BENIGN)])
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        jobs = server.service.jobs
        jobs.s3 = S3Reader(ObjectStoreConfig(
            endpoint_url=s3_url, sts_endpoint_url=s3_url, region="us-east-1",
            access_key_id="testing", secret_access_key="testing"))
        ex = Exchange(stub.Process())
        r = await ex.send(request_headers("acct-envoy", path="/model-invocation-job"))
        assert r.HasField("request_headers")
        r = await ex.send(request_body(job(benign)))
        assert r.HasField("request_body")
        assert not r.request_body.response.body_mutation.body  # unchanged
        assert jobs.counts["forwarded"] == 1
        for uri, status, kind in ((f"s3://{BUCKET}/absent.jsonl", 503, "ServiceUnavailable"),
                                  ("s3://x", 400, "ValidationException")):
            ex = Exchange(stub.Process())
            await ex.send(request_headers("acct-envoy", path="/model-invocation-job"))
            r = await ex.send(request_body(job(uri)))
            code, body = immediate(r)
            assert code == status and isinstance(body["message"], str)
            errortype = {h.header.key: h.header.raw_value.decode()
                         for h in r.immediate_response.headers.set_headers}["x-amzn-errortype"]
            assert errortype.startswith(kind)
        listed = await Exchange(stub.Process()).send(request_headers(
            "acct-envoy", path="/model-invocation-jobs", method="GET", end=True))
        assert listed.HasField("request_headers")
        code, _ = immediate(await Exchange(stub.Process()).send(request_headers(
            "acct-envoy", path="/model-invocation-job/a/b")))
        assert code == 404
        code, _ = immediate(await Exchange(stub.Process()).send(request_headers(
            "acct-envoy", path="/model-invocation-job", method="GET", end=True)))
        assert code == 405


VERTEX_JOBS = "/v1/projects/sg-test-project/locations/us-east5/batchPredictionJobs"


def put_gcs(url: str, name: str, lines: list[dict[str, Any]]) -> str:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    answer = httpx.post(f"{url}/upload/storage/v1/b/{BUCKET}/o",
                        params={"uploadType": "media", "name": name}, content=body)
    answer.raise_for_status()
    return f"gs://{BUCKET}/{name}"


def vertex_record(custom_id: str, content: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "request": {
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
        "messages": [{"role": "user", "content": CANARY + content}]}}


def vertex_job(*uris: str) -> dict[str, Any]:
    return {"displayName": "nightly", "model": "publishers/anthropic/models/claude-test@1",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": list(uris)}},
            "outputConfig": {"predictionsFormat": "jsonl",
                             "gcsDestination": {"outputUriPrefix": f"gs://{BUCKET}/out/"}}}


async def test_vertex_batch_prediction_jobs_are_checked_record_by_record(
        proxy_env: ProxyEnv, region: Region, gcs_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    benign = put_gcs(gcs_url, "in/benign.jsonl",
                     [vertex_record(f"request-{i}", BENIGN) for i in range(2)])
    malformed = put_gcs(gcs_url, "in/malformed.jsonl", [{"custom_id": "x", "request": "no"}])
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        running.proxy.jobs.gcs = GcsReader(GcsConfig(endpoint_url=gcs_url))
        await region.enforce("acct-vbad", 4, 1)
        await eventually(lambda: running.proxy.gate.held_version("acct-vbad") == 1)
        async with httpx.AsyncClient(base_url=running.url) as http:
            async def create(account: str, doc: dict[str, Any]) -> httpx.Response:
                return await http.post(VERTEX_JOBS, json=doc, headers={
                    "x-csp-account-id": account, "authorization": "Bearer caller-token"})

            created = await create("acct-vertex", vertex_job(benign))
            assert created.status_code == 200, created.text
            name = created.json()["name"]
            assert name.startswith(VERTEX_JOBS.removeprefix("/v1/") + "/")
            assert created.json()["state"] == "JOB_STATE_PENDING"
            assert running.upstream.jobs.last_body == vertex_job(benign)  # unchanged
            got = await http.get(f"/v1/{name}", headers={"x-csp-account-id": "acct-vertex"})
            assert got.status_code == 200 and got.json()["name"] == name
            for account, doc, status, code, says in (
                    ("acct-vbad", vertex_job(benign), 403, "PERMISSION_DENIED",
                     "may not create batch jobs"),
                    ("acct-vertex", vertex_job(malformed), 400, "INVALID_ARGUMENT",
                     "input object 1, line 1: expected an object with request"),
                    ("acct-vertex", vertex_job(f"gs://{BUCKET}/in/*.jsonl"), 400,
                     "INVALID_ARGUMENT", "wildcard"),
                    ("acct-vertex", vertex_job(f"gs://{BUCKET}/in/absent.jsonl"), 503,
                     "UNAVAILABLE", "NOT_FOUND"),
                    ("acct-vertex", {**vertex_job(benign), "inputConfig": {
                        "instancesFormat": "bigquery",
                        "bigquerySource": {"inputUri": "bq://p.d.t"}}}, 400,
                     "INVALID_ARGUMENT", "instancesFormat")):
                refused = await create(account, doc)
                error = refused.json()["error"]
                assert (refused.status_code, error["status"]) == (status, code)
                assert says in error["message"]
            blocked = await http.get(f"/v1/{name}", headers={"x-csp-account-id": "acct-vbad"})
            assert blocked.status_code == 403
            running.upstream.jobs.complete(name, *gcs_io(gcs_url))
            ended = await http.get(f"/v1/{name}", headers={
                "x-csp-account-id": "acct-vertex", "authorization": "Bearer caller-token"})
            assert ended.json()["state"] == "JOB_STATE_SUCCEEDED"
        assert running.upstream.jobs.created == 1
        await idle(running.proxy.jobs.outputs)
        assert running.proxy.jobs.outputs.counts["completions"] == 2
        assert running.proxy.jobs.outputs.stored == 4
    assert await observed(region, "acct-vertex") == ["allow"] * 2
    assert CANARY.strip() not in caplog.text
