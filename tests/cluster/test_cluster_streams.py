"""A region's streams and buckets on a three-node cluster are R3; on one server, R1."""

from __future__ import annotations

import uuid

import nats
import pytest
from nats.js import api

from safeguards.adapters.bus.batch_bucket import batch_bucket_name
from safeguards.adapters.bus.connect import connect, server_urls
from safeguards.adapters.bus.leases import LeaseBucket, lease_bucket_name
from safeguards.adapters.bus.policy_board import PolicyBoard, policy_bucket_name
from safeguards.adapters.bus.streams import (
    StreamSettings,
    cluster_replicas,
    inputs_config,
    provision_region,
)
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.core.subjects import stream_name

KINDS = ("INPUTS", "ENFORCE", "DLQ", "CONTENT")


async def _replicas(url: str, region: str) -> dict[str, int]:
    nc = await connect(url, name="replica-check", once=True)
    try:
        js = nc.jetstream(timeout=5)
        names = [stream_name(region, k) for k in KINDS]
        names += [f"KV_{lease_bucket_name(region)}", f"KV_{policy_bucket_name(region)}",
                  f"KV_{batch_bucket_name(region)}"]
        return {n: (await js.stream_info(n)).config.num_replicas or 1 for n in names}
    finally:
        await nc.close()


async def _provision(url: str, region: str) -> None:
    nc = await connect(url, name="provisioner", once=True)
    try:
        js = nc.jetstream(timeout=5)
        await provision_region(js, region)
        await LeaseBucket.open(js, region, ttl_s=5.0)
        await PolicyBoard.open(js, region)
    finally:
        await nc.close()


@pytest.mark.slow  # a cluster test (three servers)
async def test_a_cluster_gets_r3_streams_and_buckets(nats_cluster: EmbeddedNatsCluster) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    assert len(server_urls(nats_cluster.url)) == 3
    await _provision(nats_cluster.url, region)
    await _provision(nats_cluster.url, region)  # again, from another "node": converges
    assert set((await _replicas(nats_cluster.url, region)).values()) == {3}


async def test_one_server_gets_r1(nats_url: str) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    await _provision(nats_url, region)
    assert set((await _replicas(nats_url, region)).values()) == {1}


@pytest.mark.slow  # a cluster test (three servers)
async def test_an_r1_stream_on_a_cluster_is_raised_to_r3(
        nats_cluster: EmbeddedNatsCluster) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    nc = await nats.connect(nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=5)
        assert cluster_replicas(js) == 3
        await js.add_stream(inputs_config(region, StreamSettings(replicas=1)))
        await provision_region(js, region)
        info: api.StreamInfo = await js.stream_info(stream_name(region, "INPUTS"))
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()
