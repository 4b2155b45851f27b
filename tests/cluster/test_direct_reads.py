"""A partition whose consumer lost its leader reads its signals from the stream directly.

The consumer's Raft group waits out nats-server's 4-9 s election after its leader's server is
killed; the stream (its leader elsewhere) still takes signals. The partition reads them from any
replica meanwhile (``bus.direct_reads``); once the consumer has a leader again it delivers the
same messages, which the inbox recognises: nothing is lost, nothing is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import anyio
import pytest
from checker import score_signal
from fault_harness import T0
from nats.aio.client import Client

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.consumers import ConsumerSettings, durable_name
from safeguards.adapters.bus.direct_reads import DirectRead
from safeguards.adapters.bus.inbound import JetStreamMessage
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.core.bus import InboundMessage
from safeguards.core.codec import encode_signal
from safeguards.core.subjects import stream_name

from bus_support import publish_signals


async def _leaders(nc: Client, cluster: EmbeddedNatsCluster, region: str) -> tuple[int, int]:
    """(the stream's leader, partition 0's consumer's leader)"""
    js = nc.jetstream(timeout=5)
    stream = stream_name(region, "INPUTS")
    s = await js.stream_info(stream)
    c = await js.consumer_info(stream, durable_name(region, 0, ConsumerSettings()))
    assert s.cluster is not None and s.cluster.leader
    assert c.cluster is not None and c.cluster.leader
    return cluster.index_of(s.cluster.leader), cluster.index_of(c.cluster.leader)


async def _consumer_elsewhere(nc: Client, cluster: EmbeddedNatsCluster, region: str) -> int:
    """Step the consumer's leader down until it is not the stream's (so killing it leaves the
    stream writable); its server."""
    consumer = durable_name(region, 0, ConsumerSettings())
    with anyio.fail_after(60):
        while True:
            stream_leader, consumer_leader = await _leaders(nc, cluster, region)
            if stream_leader != consumer_leader:
                return consumer_leader
            await nc.request(f"$JS.API.CONSUMER.LEADER.STEPDOWN."
                             f"{stream_name(region, 'INPUTS')}.{consumer}", b"", timeout=5)
            await anyio.sleep(1.0)


@pytest.mark.slow  # kills a server and waits out the consumer's election (~10 s)
async def test_signals_flow_while_the_consumer_elects_and_are_delivered_again_after() -> None:
    region = "dir" + uuid.uuid4().hex[:6]
    before, *during = [score_signal(region, f"acct-{i}", f"{region}-s{i}", T0,
                                    (("jailbreak", 0.1),)) for i in range(4)]
    # published with one partition: every account on partition 0
    with EmbeddedNatsCluster() as cluster:
        async with NatsBus(cluster.url, region).connect("direct-test") as bus:
            await bus.provision()
            source = bus.signal_source(0)
            await source.open()
            nc = await connect(cluster.url, name="direct-test-admin")
            try:
                js = nc.jetstream(timeout=5)
                await publish_signals(js, region, 1, [before])
                got: Sequence[InboundMessage] = []
                with anyio.fail_after(20):
                    while not got:
                        got = await source.fetch(8, timeout_s=0.5)
                assert [m.data for m in got] == [encode_signal(before)]
                await got[0].ack()
                victim = await _consumer_elsewhere(nc, cluster, region)
                cluster.kill(victim)
                # published through a survivor: a connection on the victim would reconnect
                # first, and the consumer could be elected before anything is read directly
                survivors = ",".join(u for i, u in enumerate(cluster.urls) if i != victim)
                publisher = await connect(survivors, name="direct-test-publisher")
                try:
                    with anyio.fail_after(30):
                        await publish_signals(publisher.jetstream(timeout=5), region, 1, during)
                finally:
                    await publisher.close()

                # the consumer cannot deliver them until it has a leader: read directly
                direct: list[InboundMessage] = []
                with anyio.fail_after(30):
                    while len(direct) < len(during):
                        direct += await source.fetch(8, timeout_s=0.5)
                assert all(isinstance(m, DirectRead) for m in direct)
                assert [m.data for m in direct] == [encode_signal(s) for s in during]
                assert source.direct_reads == len(during)
                for m in direct:
                    await m.ack()  # does nothing: no consumer delivered it

                # the elected leader delivers each of them: the inbox's to recognise
                again: list[InboundMessage] = []
                with anyio.fail_after(30):
                    while len(again) < len(during):
                        again += await source.fetch(8, timeout_s=0.5)
                assert all(isinstance(m, JetStreamMessage) for m in again)
                assert [m.sequence for m in again] == [m.sequence for m in direct]
                assert [m.headers for m in again] == [m.headers for m in direct]
                assert [m.subject for m in again] == [m.subject for m in direct]
                for m in again:
                    await m.ack()
                await source.close()
            finally:
                await nc.close()
                cluster.restart(victim)


@pytest.mark.slow  # pauses a server for a few seconds
async def test_signals_flow_while_the_consumers_server_is_paused() -> None:
    """A paused server keeps its routes, so pull requests forwarded to its consumer go
    unanswered (no "no responders"): once one is written off, the partition reads directly."""
    region = "dip" + uuid.uuid4().hex[:6]
    before, *during = [score_signal(region, f"acct-{i}", f"{region}-s{i}", T0,
                                    (("jailbreak", 0.1),)) for i in range(4)]
    with EmbeddedNatsCluster() as cluster:
        nc = await connect(cluster.url, name="direct-test-admin")
        try:
            async with NatsBus(cluster.url, region).connect("direct-test-provision") as bus:
                await bus.provision()
                await bus.signal_source(0).open()  # makes the partition's consumer
            victim = await _consumer_elsewhere(nc, cluster, region)
            # the partition and the publisher on the survivors: only the consumer is paused
            survivors = ",".join(u for i, u in enumerate(cluster.urls) if i != victim)
            async with NatsBus(survivors, region).connect("direct-test") as bus:
                source = bus.signal_source(0)
                await source.open()
                publisher = await connect(survivors, name="direct-test-publisher")
                try:
                    js = publisher.jetstream(timeout=5)
                    await publish_signals(js, region, 1, [before])
                    got: Sequence[InboundMessage] = []
                    with anyio.fail_after(20):
                        while not got:
                            got = await source.fetch(8, timeout_s=0.5)
                    await got[0].ack()
                    cluster.pause(victim)
                    try:
                        await publish_signals(js, region, 1, during)
                        direct: list[InboundMessage] = []
                        with anyio.fail_after(30):
                            while len(direct) < len(during):
                                direct += await source.fetch(8, timeout_s=0.5)
                    finally:
                        cluster.resume(victim)
                    assert all(isinstance(m, DirectRead) for m in direct)
                    assert [m.data for m in direct] == [encode_signal(s) for s in during]
                    # the consumer answers again and delivers each of them
                    again: list[InboundMessage] = []
                    with anyio.fail_after(30):
                        while len(again) < len(during):
                            again += await source.fetch(8, timeout_s=0.5)
                    assert all(isinstance(m, JetStreamMessage) for m in again)
                    assert [m.sequence for m in again] == [m.sequence for m in direct]
                    for m in again:
                        await m.ack()
                finally:
                    await publisher.close()
                await source.close()
        finally:
            await nc.close()
