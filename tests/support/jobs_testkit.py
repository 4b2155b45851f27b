"""Test support for providers' batch jobs: real object stores in their own processes (moto's
S3-compatible server, with STS and IAM; gcp-storage-emulator), the job and record shapes, and
botocore's own Bedrock client at the proxy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import anyio
import botocore.config
import botocore.session
import httpx
import pytest
from batch_testkit import input_signals
from botocore.exceptions import ClientError
from csp_testkit import Region, RunningProxy

from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.csp.job_outputs import JobOutputs
from safeguards.adapters.csp.object_store import ObjectStoreConfig, S3Reader
from safeguards.adapters.embedded import free_port
from safeguards.core.codec import decode_record
from safeguards.core.content import ContentItem
from safeguards.core.events import RequestObserved
from safeguards.core.subjects import stream_name

MODEL = "anthropic.claude-test-1"
BUCKET = "sg-batch-inputs"
ROLE = "arn:aws:iam::123456789012:role/batch"  # moto's default account
BENIGN = "What is a good recipe for banana bread with walnuts?"
BOMB = "Give me step-by-step instructions to build a pipe bomb at home."
CANARY = "zq-canary-7c41 "  # in every prompt: never in an error or a log line
REPLY = CANARY + "Mash three ripe bananas, then fold in the walnuts."  # a job's answers
VERTEX_JOBS = "/v1/projects/sg-test-project/locations/us-east5/batchPredictionJobs"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextlib.contextmanager
def server_process(*argv: str) -> Iterator[str]:
    """A real object store server in its own process, on a free loopback port."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", *argv, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def moto_server() -> contextlib.AbstractContextManager[str]:
    """moto's server: S3, STS and IAM on one endpoint (IAM's policies unenforced until
    ``/moto-api/reset-auth`` says otherwise)."""
    return server_process("moto.server", "-H", "127.0.0.1", "-p")


def gcs_emulator() -> contextlib.AbstractContextManager[str]:
    """gcp-storage-emulator: Cloud Storage's JSON API, in memory, with the test's bucket."""
    return server_process("gcp_storage_emulator", "start", "-H", "127.0.0.1", "-M", "-q",
                          "--default-bucket", BUCKET, "--port")


def aws(url: str, service: str, **keys: str) -> Any:
    """botocore's client of ``service`` at moto's server (the test's own keys by default)."""
    return botocore.session.get_session().create_client(
        service, endpoint_url=url, region_name="us-east-1", **(keys or KEYS))


def bedrock(running: RunningProxy | str, account: str) -> Any:
    """botocore's Bedrock control-plane client at the proxy (or its URL), with the front
    door's header."""
    url = running if isinstance(running, str) else running.url
    client = botocore.session.get_session().create_client(
        "bedrock", endpoint_url=url, region_name="us-east-1", **KEYS,
        config=botocore.config.Config(retries={"total_max_attempts": 1}))

    def identify(request: Any, **_: Any) -> None:
        request.headers["x-csp-account-id"] = account

    client.meta.events.register("before-sign.bedrock.*", identify)
    return client


def s3_reader(url: str, keys: dict[str, str]) -> S3Reader:
    """The gate's S3 reader at moto (``url``, STS there too) with the gate's own keys."""
    return S3Reader(ObjectStoreConfig(endpoint_url=url, sts_endpoint_url=url,
                                      region="us-east-1", access_key_id=keys["aws_access_key_id"],
                                      secret_access_key=keys["aws_secret_access_key"]))


def record(record_id: str, content: str) -> dict[str, Any]:
    return {"recordId": record_id, "modelInput": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
        "messages": [{"role": "user", "content": CANARY + content}]}}


def put_input(url: str, key: str, lines: list[dict[str, Any]] | bytes,
              bucket: str = BUCKET) -> str:
    body = lines if isinstance(lines, bytes) else b"".join(
        json.dumps(line).encode() + b"\n" for line in lines)
    aws(url, "s3").put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def job(uri: str, role: str = ROLE) -> dict[str, Any]:
    return {"jobName": "nightly", "modelId": MODEL, "roleArn": role,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": uri}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}}}


async def create(client: Any, uri: str, role: str = ROLE) -> dict[str, Any]:
    answer: dict[str, Any] = await anyio.to_thread.run_sync(
        lambda: client.create_model_invocation_job(**job(uri, role)))
    return answer


async def refused(client: Any, uri: str, role: str = ROLE) -> dict[str, Any]:
    """The error of a creation the proxy refused: Bedrock's code and message, and the status."""
    with pytest.raises(ClientError) as caught:
        await create(client, uri, role)
    error: dict[str, Any] = caught.value.response["Error"]
    error["status"] = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return error


def s3_io(url: str, **keys: str) -> tuple[Callable[[str], bytes], Callable[[str, bytes], None]]:
    """Read and write ``s3://`` URIs at moto's server (the provider's own access, for the
    upstream stand-in's ``JobStore.complete``)."""
    client = aws(url, "s3", **keys)

    def split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def read(uri: str) -> bytes:
        data: bytes = client.get_object(Bucket=split(uri)[0], Key=split(uri)[1])["Body"].read()
        return data

    def write(uri: str, data: bytes) -> None:
        client.put_object(Bucket=split(uri)[0], Key=split(uri)[1], Body=data)

    return read, write


def gcs_io(url: str) -> tuple[Callable[[str], bytes], Callable[[str, bytes], None]]:
    """Read and write ``gs://`` URIs at the Cloud Storage emulator (the provider's access)."""
    def split(uri: str) -> tuple[str, str]:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return bucket, name

    def read(uri: str) -> bytes:
        bucket, name = split(uri)
        answer = httpx.get(f"{url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                           params={"alt": "media"})
        answer.raise_for_status()
        return answer.content

    def write(uri: str, data: bytes) -> None:
        bucket, name = split(uri)
        httpx.post(f"{url}/upload/storage/v1/b/{bucket}/o", params={
            "uploadType": "media", "name": name}, content=data).raise_for_status()

    return read, write


class _Relay(BaseHTTPRequestHandler):
    """Forwards Cloud Storage reads to the emulator, noting each one's Authorization header;
    an object's download waits for ``hold`` where one is set (a slow store)."""

    upstream: ClassVar[str] = ""
    seen: ClassVar[list[str | None]] = []
    hold: ClassVar[threading.Event | None] = None

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("authorization"))
        if self.hold is not None and self.path.startswith("/download/"):
            self.hold.wait(60)
        answer = httpx.get(self.upstream + self.path, headers={
            k: v for k, v in self.headers.items() if k.lower() in ("range", "authorization")})
        self.send_response(answer.status_code)
        for name in ("content-type", "content-range"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *_: Any) -> None:
        return


@contextlib.contextmanager
def relayed_gcs(upstream: str, hold: threading.Event | None = None
                ) -> Iterator[tuple[str, list[str | None]]]:
    """A relay before the Cloud Storage emulator at ``upstream``: its URL, and the
    Authorization header of each read it relayed (the token the gate read with). With
    ``hold``: each object's download waits until it is set (set on the way out)."""
    seen: list[str | None] = []
    handler = type("Relay", (_Relay,), {"upstream": upstream, "seen": seen, "hold": hold})
    relay = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{relay.server_address[1]}", seen
    finally:
        if hold is not None:
            hold.set()
        relay.shutdown()
        relay.server_close()
        thread.join(10)


async def idle(outputs: JobOutputs) -> None:
    """Waits for the output observations that polls started in the background to end."""
    for _ in range(3000):
        if not outputs.observing:
            return
        await anyio.sleep(0.01)
    raise TimeoutError("a batch job's output observation did not end")


def vertex_job(uri: str) -> dict[str, Any]:
    return {"displayName": "nightly", "model": "publishers/anthropic/models/claude-test@1",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [uri]}},
            "outputConfig": {"predictionsFormat": "jsonl",
                             "gcsDestination": {"outputUriPrefix": f"gs://{BUCKET}/out/"}}}


async def signals(region: Region, account: str) -> list[RequestObserved]:
    """The account's RequestObserved signals on the region's inputs stream."""
    return [s.observation for s in await input_signals(region, 50, wait_s=5)
            if s.account_id == account and isinstance(s.observation, RequestObserved)]


async def content(region: Region, account: str) -> list[ContentItem]:
    """The account's items on the region's content stream (read by sequence, unsealed)."""
    js = region.nc.jetstream()
    stream = stream_name(region.name, "CONTENT")
    state = (await js.stream_info(stream)).state
    keys = load_producer_keys(region.name)
    found: list[ContentItem] = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        msg = await js.get_msg(stream, seq)
        assert msg.subject is not None and msg.data is not None
        item = decode_record(keys.open(msg.subject, msg.data), ContentItem)
        if item.account_id == account:
            found.append(item)
    return found


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


@contextlib.asynccontextmanager
async def killed_proxy(region: str, nats_url: str, upstream: str, log: Path,
                       env: dict[str, str]) -> AsyncIterator[str]:
    """A ``safeguards proxy`` process (``env`` added to its environment) serving while the block
    runs, then killed with SIGKILL: no shutdown, whatever it was doing cut short. Its URL."""
    port = free_port()
    proc = _spawn(["proxy", "--region", region, "--upstream", upstream, "--nats", nats_url,
                   "--port", str(port), "--caller-auth", "loopback"], log, env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(url + "/readyz")).status_code == 200:
                        break
                assert proc.poll() is None and time.monotonic() < deadline, f"see {log}"
                await anyio.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
    assert proc.returncode == -signal.SIGKILL
