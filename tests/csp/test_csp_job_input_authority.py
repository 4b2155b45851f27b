"""Whose authority reads a provider's batch job's input: the job's, never the gate's (issue 17's
confused deputy). Bedrock: moto's server with IAM's policies enforced, where the gate's own user
may only assume roles and cannot read the bucket, so an input read at all was read with the
role's temporary keys; a role that cannot read it, or one the gate may not assume, refuses the
job in Bedrock's shape, saying nothing of the object. Vertex: the caller's own bearer token is
what reaches Cloud Storage (a real emulator, through a relay that records the header); no token
refuses the job before anything is read."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from botocore.exceptions import ClientError
from csp_testkit import Region, RunningProxy
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from extproc_testkit import Exchange, ext_proc, headers, immediate, request_body
from jobs_testkit import (
    BENIGN,
    BUCKET,
    CANARY,
    aws,
    bedrock,
    create,
    gcs_emulator,
    moto_server,
    put_input,
    record,
    refused,
    relayed_gcs,
    s3_reader,
)

from safeguards.adapters.csp.assumed_roles import SESSION_NAME, AssumedRoles
from safeguards.adapters.csp.gcs_store import GcsConfig, GcsReader
from safeguards.adapters.csp.input_errors import AccessRefused
from safeguards.core.policy import Policy

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]

ROLES = "arn:aws:iam::123456789012:role/"
READER, NO_READER, ELSEWHERE = ROLES + "reader", ROLES + "no-reader", ROLES + "elsewhere"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})


def _policy(action: str | list[str], resource: str | list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": action, "Resource": resource}]})


@pytest.fixture(scope="module")
def iam() -> Iterator[tuple[str, dict[str, str]]]:
    """moto's server and the gate's own keys: a user that may assume ``reader`` and
    ``no-reader`` (not ``elsewhere``) and may read nothing; IAM enforced once it is set up."""
    with moto_server() as url:
        aws(url, "s3").create_bucket(Bucket=BUCKET)
        put_input(url, "benign.jsonl", [record(f"CALL{i:07d}", BENIGN) for i in range(2)])
        client = aws(url, "iam")
        client.create_user(UserName="gate")
        made = client.create_access_key(UserName="gate")["AccessKey"]
        client.put_user_policy(UserName="gate", PolicyName="assume", PolicyDocument=_policy(
            "sts:AssumeRole", [READER, NO_READER]))
        for name, action, resource in (
                ("reader", ["s3:GetObject", "s3:ListBucket"],
                 [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]),
                ("no-reader", "s3:GetObject", "arn:aws:s3:::another-bucket/*"),
                ("elsewhere", "s3:*", "*")):
            client.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
            client.put_role_policy(RoleName=name, PolicyName="input",
                                   PolicyDocument=_policy(action, resource))
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()
        yield url, {"aws_access_key_id": made["AccessKeyId"],
                    "aws_secret_access_key": made["SecretAccessKey"]}


async def test_a_bedrock_jobs_input_is_read_as_its_role_never_as_the_gate(
        proxy_env: ProxyEnv, iam: tuple[str, dict[str, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, gate_keys = iam
    benign, missing = f"s3://{BUCKET}/benign.jsonl", f"s3://{BUCKET}/missing.jsonl"
    with pytest.raises(ClientError) as own:  # the gate's own keys may not read the input
        await anyio.to_thread.run_sync(lambda: aws(url, "s3", **gate_keys).get_object(
            Bucket=BUCKET, Key="benign.jsonl"))
    assert own.value.response["Error"]["Code"] == "AccessDenied"
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        jobs = running.proxy.jobs
        jobs.s3 = s3_reader(url, gate_keys)
        client = bedrock(running, "acct-roles")  # fresh: screened, so unreadable fails closed
        for _ in range(2):  # read as the role: its keys assumed once, then kept
            assert (await create(client, benign, READER))["jobArn"]
        assert jobs.s3.roles.assumed == 1 and jobs.counts["forwarded"] == 2
        held = await anyio.to_thread.run_sync(jobs.s3.roles.credentials, READER, "acct-roles")
        who = await anyio.to_thread.run_sync(lambda: aws(
            url, "sts", aws_access_key_id=held.access_key_id,
            aws_secret_access_key=held.secret_access_key,
            aws_session_token=held.session_token).get_caller_identity())
        assert who["Arn"].endswith(f":assumed-role/reader/{SESSION_NAME}")
        # a role that may not read the bucket: the same refusal whether the object exists
        errors = [await refused(client, uri, NO_READER) for uri in (benign, missing)]
        for error in errors:
            assert (error["status"], error["Code"]) == (403, "AccessDeniedException")
            assert error["Message"] == ("the job's role may not read its input (AccessDenied)")
        error = await refused(client, benign, ELSEWHERE)  # the gate may not assume it
        assert (error["status"], error["Code"]) == (403, "AccessDeniedException")
        assert error["Message"] == ("the safety gate may not assume the job's role to read its "
                                    "input (AccessDenied)")
        error = await refused(client, benign, "arn:aws:iam::123:role/x")
        assert (error["status"], error["Code"]) == (400, "ValidationException")
        assert error["Message"] == "roleArn: expected an IAM role's ARN"
        assert jobs.counts["access_refused"] == 3 and jobs.counts["bad_input"] == 1
        assert "unreadable_forwarded" not in jobs.counts
        assert running.upstream.jobs.created == 2
    assert CANARY.strip() not in caplog.text and held.secret_access_key not in caplog.text
    assert held.session_token not in caplog.text


def test_assumed_credentials_are_kept_until_shortly_before_they_expire(
        iam: tuple[str, dict[str, str]]) -> None:
    url, gate_keys = iam
    now = [0.0]
    roles = AssumedRoles(lambda: aws(url, "sts", **gate_keys), max_roles=1,
                         clock=lambda: now[0])
    first = roles.credentials(READER, "acct-a")
    now[0] = first.expires_at - 301  # five minutes and a second before they expire: kept
    assert roles.credentials(READER, "acct-a") == first and roles.assumed == 1
    now[0] = first.expires_at - 299  # too close: assumed anew
    second = roles.credentials(READER, "acct-a")
    assert second.access_key_id != first.access_key_id and roles.assumed == 2
    roles.credentials(NO_READER, "acct-a")  # one role kept at most: the reader's dropped
    roles.credentials(READER, "acct-a")
    assert roles.assumed == 4
    roles.credentials(READER, "acct-b")  # another account: its own ExternalId, its own keys
    assert roles.assumed == 5
    with pytest.raises(AccessRefused) as refused_role:
        roles.credentials(ELSEWHERE, "acct-a")
    assert (refused_role.value.status, refused_role.value.reason) == (403, "AccessDenied")
    assert second.secret_access_key not in repr(second)
    assert second.session_token not in repr(second)


@pytest.fixture(scope="module")
def gcs_relay() -> Iterator[tuple[str, str, list[str | None]]]:
    """The emulator's URL, a relay's before it, and the Authorization headers it saw."""
    with gcs_emulator() as url, relayed_gcs(url) as (relay, seen):
        yield url, relay, seen


VERTEX_JOBS = "/v1/projects/sg-test-project/locations/us-east5/batchPredictionJobs"


def put_gcs(url: str, name: str) -> str:
    body = json.dumps({"custom_id": "request-1", "request": {
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 100,
        "messages": [{"role": "user", "content": CANARY + BENIGN}]}}).encode() + b"\n"
    httpx.post(f"{url}/upload/storage/v1/b/{BUCKET}/o", params={
        "uploadType": "media", "name": name}, content=body).raise_for_status()
    return f"gs://{BUCKET}/{name}"


def vertex_job(uri: str) -> dict[str, Any]:
    return {"displayName": "nightly", "model": "publishers/anthropic/models/claude-test@1",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [uri]}},
            "outputConfig": {"predictionsFormat": "jsonl",
                             "gcsDestination": {"outputUriPrefix": f"gs://{BUCKET}/out/"}}}


async def test_a_vertex_jobs_input_is_read_with_the_callers_own_token(
        proxy_env: ProxyEnv, gcs_relay: tuple[str, str, list[str | None]],
        caplog: pytest.LogCaptureFixture) -> None:
    emulator, relay, seen = gcs_relay
    uri = put_gcs(emulator, "in/token.jsonl")
    seen.clear()
    caplog.set_level(logging.DEBUG)
    async with proxy_env() as running:
        jobs = running.proxy.jobs
        jobs.gcs = GcsReader(GcsConfig(endpoint_url=relay))
        async with httpx.AsyncClient(base_url=running.url) as http:
            async def create(*authorization: str) -> httpx.Response:
                return await http.post(VERTEX_JOBS, json=vertex_job(uri), headers=[
                    ("x-csp-account-id", "acct-vtoken"),
                    *(("authorization", value) for value in authorization)])

            created = await create("Bearer ya29.caller-token")
            assert created.status_code == 200, created.text
            assert seen == ["Bearer ya29.caller-token"]  # the caller's, not the gate's
            for authorization in ((), ("Basic c2VjcmV0LXBhc3M=",), ("Bearer tok-two words",),
                                  ("Bearer tok-first", "Bearer tok-second")):
                refusal = await create(*authorization)
                error = refusal.json()["error"]
                assert (refusal.status_code, error["status"]) == (401, "UNAUTHENTICATED")
                assert error["message"].startswith("the job's input is read with the caller's "
                                                   "own credentials")
                assert not any(value.split()[-1] in error["message"] for value in authorization)
        assert seen == ["Bearer ya29.caller-token"]  # nothing read without one token
        assert jobs.counts["access_refused"] == 4 and running.upstream.jobs.created == 1
    assert "ya29" not in caplog.text and CANARY.strip() not in caplog.text


async def test_behind_envoy_a_vertex_job_is_read_with_the_callers_token(
        region: Region, nats_url: str, test_policy: Policy,
        gcs_relay: tuple[str, str, list[str | None]]) -> None:
    emulator, relay, seen = gcs_relay
    uri = put_gcs(emulator, "in/envoy.jsonl")
    seen.clear()
    async with ext_proc(region, nats_url, test_policy) as (server, stub):
        server.service.jobs.gcs = GcsReader(GcsConfig(endpoint_url=relay))
        for token in ("Bearer envoy-caller-token", None):
            pairs = {":method": "POST", ":path": VERTEX_JOBS, "content-type": "application/json",
                     "x-csp-account-id": "acct-venvoy"}
            if token is not None:
                pairs["authorization"] = token
            ex = Exchange(stub.Process())
            answer = await ex.send(pb.ProcessingRequest(request_headers=headers(pairs)))
            assert answer.HasField("request_headers")
            answer = await ex.send(request_body(vertex_job(uri)))
            if token is not None:
                assert answer.HasField("request_body")
                assert not answer.request_body.response.body_mutation.body  # unchanged
            else:
                code, body = immediate(answer)
                error = body["error"]
                assert code == 401 and isinstance(error, dict)
                assert error["status"] == "UNAUTHENTICATED"
    assert seen == ["Bearer envoy-caller-token"]
