"""KV buckets made at R1 (the region ran on one server) are raised to R3 when the region runs on
a cluster, as its streams are: leases, policy board, home directory, cross-region board."""

from __future__ import annotations

import contextlib
import uuid

import anyio
import nats
import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue

from safeguards.adapters.bus.cross_signals import GLOBAL_BUCKET, open_global_board
from safeguards.adapters.bus.homes import HomeDirectory, home_bucket_name
from safeguards.adapters.bus.leases import LeaseBucket, lease_bucket_name
from safeguards.adapters.bus.policy_board import PolicyBoard, policy_bucket_name
from safeguards.adapters.bus.streams import cluster_replicas
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster


async def _replicas(js: JetStreamContext, bucket: str) -> int:
    """The bucket's replica count, once the servers that hold it report it (a raised group
    names its followers a moment after its config changes)."""
    with anyio.fail_after(15):
        while True:
            info = await js.stream_info(f"KV_{bucket}")
            assert info.cluster is not None
            want = info.config.num_replicas or 1
            if len(info.cluster.replicas or []) == want - 1:  # the leader's followers
                return want
            await anyio.sleep(0.1)


async def _first_put(kv: KeyValue) -> None:
    """A key in a bucket just made: its stream's server may not yet be known across the
    routes (no responders for a moment)."""
    with anyio.fail_after(15):
        while True:
            try:
                await kv.put("before", b"kept")
                return
            except (NoStreamResponseError, nats.errors.NoRespondersError, TimeoutError):
                await anyio.sleep(0.1)


@pytest.mark.slow  # a cluster test (three servers)
async def test_r1_buckets_on_a_cluster_are_raised_to_r3_keeping_their_keys(
        nats_cluster: EmbeddedNatsCluster) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    buckets = (lease_bucket_name(region), policy_bucket_name(region), home_bucket_name(region),
               GLOBAL_BUCKET)
    nc = await nats.connect(nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=5)
        assert cluster_replicas(js) == 3
        for bucket in buckets:  # as one server made them, each with a key in it
            await _first_put(await js.create_key_value(bucket=bucket, history=1, replicas=1))
        # a gate opens the policy board read-only: not its bucket to raise
        await PolicyBoard.open(js, region, provision=False)
        assert await _replicas(js, policy_bucket_name(region)) == 1
        # the owners open theirs (nodes, a gate's home directory, a classifier's board)
        await LeaseBucket.open(js, region, ttl_s=5.0)
        await PolicyBoard.open(js, region)
        await HomeDirectory.open(js, region)
        await open_global_board(js)
        for bucket in buckets:
            assert await _replicas(js, bucket) == 3, bucket
            entry = await (await js.key_value(bucket)).get("before")
            assert entry.value == b"kept"
        await LeaseBucket.open(js, region, ttl_s=5.0)  # again: already R3, nothing to do
        assert await _replicas(js, lease_bucket_name(region)) == 3
    finally:
        try:
            for bucket in buckets:
                with contextlib.suppress(NotFoundError):  # not made: the test failed before it
                    await nc.jetstream(timeout=5).delete_key_value(bucket)
        finally:
            await nc.close()
