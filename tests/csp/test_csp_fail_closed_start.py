"""A gate never serves an account it knows nothing about as if it were at L0: started while NATS
is down it refuses (503, /readyz 503) until it has read its region's enforcement, unless a
verified local snapshot of the last synced state lets it keep enforcing through the outage."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import anthropic
import httpx
import msgpack
import nats
import pytest
from anthropic.types import MessageParam
from csp_testkit import Region, eventually

from safeguards.adapters.bus.signing import load_verifier
from safeguards.adapters.csp.feed_snapshot import FeedSnapshot
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded import EmbeddedNats, free_port
from safeguards.adapters.keyfiles import state_dir
from safeguards.core.policy import default_policy
from safeguards.core.subjects import enforce_subject, stream_name

MODEL = "claude-test-1"
MSG: list[MessageParam] = [{"role": "user", "content": "hello"}]


def client(url: str, account: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0,
                                    default_headers={"x-csp-account-id": account})


async def status_of(url: str, account: str) -> int:
    try:
        await client(url, account).messages.create(model=MODEL, max_tokens=5, messages=MSG)
    except anthropic.APIStatusError as exc:
        return exc.status_code
    return 200


async def probe(url: str, path: str) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(url + path)).status_code


@pytest.mark.slow
async def test_a_gate_started_without_nats_refuses_until_synced_or_restored(
        tmp_path: Path) -> None:
    base = default_policy()
    policy = replace(base, gate=replace(base.gate, before_sync_hold_ms=100))
    server = EmbeddedNats(tmp_path / "nats").start()
    port = server.port
    name = "t" + secrets.token_hex(4)
    snapshot_path = state_dir() / f"enforce-cache-{name}.snapshot"
    try:
        async with await nats.connect(server.url) as nc:
            await ensure_gate_streams(nc.jetstream(), name)
            await Region(name, nc, policy).enforce("acct-terminated", 5, 3)
        async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as up:
            config = ProxyConfig(region=name, upstream_url=up, nats_url=server.url,
                                 feed_heartbeat_s=0.2, publish_timeout_s=0.5,
                                 caller_auth="loopback")
            # 1. A proxy reads the stream and keeps a snapshot of what it read.
            first = CspProxy(config, policy)
            async with serving(first, "127.0.0.1", free_port()) as url:
                await eventually(lambda: first.gate.held_version("acct-terminated") == 3, 10)
                assert await probe(url, "/readyz") == 200
                assert await status_of(url, "acct-terminated") == 403
                await eventually(lambda: snapshot_path.exists(), 10)
            server.kill()

            # 2. Restarted during the outage, it restores the snapshot and keeps enforcing.
            second = CspProxy(config, policy)
            async with serving(second, "127.0.0.1", free_port()) as url:
                assert second.gate.synced and await probe(url, "/readyz") == 200
                assert await status_of(url, "acct-terminated") == 403
                assert await status_of(url, "acct-fresh") == 200

            # 3. Without a snapshot it refuses everyone, and says it is not ready.
            snapshot_path.unlink()
            third = CspProxy(config, policy)
            async with serving(third, "127.0.0.1", free_port()) as url:
                assert await probe(url, "/healthz") == 200  # alive
                assert await probe(url, "/readyz") == 503  # but not ready
                assert await status_of(url, "acct-fresh") == 503
                assert await status_of(url, "acct-terminated") == 503
                assert third.gate.fallbacks[("not_synced", "closed")] == 2

                # 4. NATS comes back: it reads the stream and serves by what it holds.
                server = EmbeddedNats(tmp_path / "nats", port=port).start()
                await eventually(lambda: third.gate.synced, 20)
                assert await probe(url, "/readyz") == 200
                assert await status_of(url, "acct-terminated") == 403
                assert await status_of(url, "acct-fresh") == 200
    finally:
        server.close()


async def test_a_tampered_snapshot_entry_is_refused_alone(tmp_path: Path, nats_url: str) -> None:
    name = "t" + secrets.token_hex(4)
    policy = default_policy()
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await ensure_gate_streams(js, name)
        region = Region(name, nc, policy)
        await region.enforce("acct-a", 5, 2)
        await region.enforce("acct-b", 4, 7)
        snapshot = FeedSnapshot(tmp_path / "s.snapshot", name, load_verifier(name))
        for account in ("acct-a", "acct-b"):
            msg = await js.get_last_msg(stream_name(name, "ENFORCE"),
                                        enforce_subject(name, account))
            assert msg.headers is not None and msg.data is not None
            snapshot.remember(msg.subject or "", dict(msg.headers), msg.data)
    assert snapshot.save() == 2
    loaded = FeedSnapshot(snapshot.path, name, load_verifier(name)).load()
    assert loaded is not None and {c.account_id for c in loaded} == {"acct-a", "acct-b"}

    doc = msgpack.unpackb(snapshot.path.read_bytes(), raw=False)
    payload = doc["commands"][0][3]
    doc["commands"][0][3] = payload[:-1] + bytes([payload[-1] ^ 1])  # one bit changed
    snapshot.path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    reread = FeedSnapshot(snapshot.path, name, load_verifier(name))
    survivors = reread.load()
    assert survivors is not None and len(survivors) == 1 and reread.load_failures == 1

    snapshot.path.write_bytes(b"not a snapshot")
    assert FeedSnapshot(snapshot.path, name, load_verifier(name)).load() is None
    assert FeedSnapshot(tmp_path / "absent", name, load_verifier(name)).load() is None


async def test_the_stream_outranks_an_old_snapshot_once_read(nats_url: str) -> None:
    """A snapshot from an earlier deployment (higher versions, accounts the stream no longer
    has) serves only until the stream is read; then the stream's values stand."""
    name = "t" + secrets.token_hex(4)
    policy = default_policy()
    snapshot = FeedSnapshot(state_dir() / f"enforce-cache-{name}.snapshot", name,
                            load_verifier(name))
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await ensure_gate_streams(js, name)
        region = Region(name, nc, policy)
        for account, level, version in (("acct-ghost", 5, 9), ("acct-gone", 4, 3)):
            await region.enforce(account, level, version)
            msg = await js.get_last_msg(stream_name(name, "ENFORCE"),
                                        enforce_subject(name, account))
            assert msg.headers is not None and msg.data is not None
            snapshot.remember(msg.subject or "", dict(msg.headers), msg.data)
        snapshot.save()
        await js.purge_stream(stream_name(name, "ENFORCE"))  # a new deployment's stream
        await region.enforce("acct-ghost", 1, 2)
    async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as up:
        proxy = CspProxy(ProxyConfig(region=name, upstream_url=up, nats_url=nats_url,
                                     feed_heartbeat_s=0.2, caller_auth="loopback"), policy)
        assert proxy.gate.synced and proxy.gate.held_version("acct-ghost") == 9  # restored
        async with serving(proxy, "127.0.0.1", free_port()):
            assert proxy.feed is not None
            await eventually(lambda: proxy.feed is not None and proxy.feed.ready.is_set(), 10)
            assert proxy.gate.held_version("acct-ghost") == 2
            assert proxy.gate.held_version("acct-gone") is None
