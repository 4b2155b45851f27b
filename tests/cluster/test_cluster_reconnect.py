"""A connection leaving one server of a cluster goes to another, never straight back.

nats-py's own choice shuffles every server, the one just left included: a server that is
paused (SIGSTOP) still accepts TCP connections, so a move back to it sat out the whole connect
timeout while the partitions' leases ran out (``bus.connect.ServerRotation``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import anyio
import pytest
from checker import score_signal
from fault_harness import T0

from safeguards.adapters.bus.cluster_watch import routed_servers
from safeguards.adapters.bus.connect import CONNECT_TIMEOUT_S, connect
from safeguards.adapters.bus.consumers import ConsumerSettings, durable_name
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.core.bus import InboundMessage
from safeguards.core.codec import encode_signal
from safeguards.core.events import Signal
from safeguards.core.subjects import stream_name

from bus_support import publish_signals


def _server_of(cluster: EmbeddedNatsCluster, netloc: str) -> int:
    return [u.removeprefix("nats://") for u in cluster.urls].index(netloc)


async def test_moves_off_a_paused_server_to_a_live_one_every_time() -> None:
    with EmbeddedNatsCluster() as cluster:
        nc = await connect(cluster.url, name="rotation-test")
        try:
            for _ in range(4):  # 1 in 3 per move with a shuffle that may pick the paused one
                assert nc.connected_url is not None
                left = _server_of(cluster, nc.connected_url.netloc)
                cluster.pause(left)
                try:
                    start = time.monotonic()
                    await nc.force_reconnect()
                    with anyio.fail_after(CONNECT_TIMEOUT_S * 3):
                        while True:
                            if nc.is_connected:
                                break
                            await anyio.sleep(0.02)
                    took = time.monotonic() - start
                    assert nc.connected_url is not None
                    assert _server_of(cluster, nc.connected_url.netloc) != left
                    # straight to a live server: no connect timeout sat out on the paused one
                    assert took < CONNECT_TIMEOUT_S
                    await nc.flush(timeout=2)
                finally:
                    cluster.resume(left)
        finally:
            await nc.close()



async def _publish_to_partition_0(cluster: EmbeddedNatsCluster, region: str,
                                  signal: Signal) -> int:
    """Publish ``signal`` to partition 0's inputs; the server leading that partition's
    consumer."""
    nc = await connect(cluster.url, name="partition-0-admin")
    try:
        js = nc.jetstream(timeout=5)
        await publish_signals(js, region, 1, [signal])
        info = await js.consumer_info(stream_name(region, "INPUTS"),
                                      durable_name(region, 0, ConsumerSettings()))
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader
    return cluster.index_of(info.cluster.leader)


@pytest.mark.slow  # a fault test: waits out a consumer leader's election (~10 s)
async def test_a_partition_reopened_while_its_consumer_has_no_leader_pulls_at_the_election(
) -> None:
    """A partition's lease is lost and taken back while its consumer's leader is paused:
    opening it again does not wait on a consumer create that no leader answers (5 s a try), so
    the signal waiting for it is in hand as soon as a new leader is elected."""
    region = "rot" + uuid.uuid4().hex[:6]
    signal = score_signal(region, "acct-1", f"{region}-s", T0, (("jailbreak", 0.1),))
    with EmbeddedNatsCluster() as cluster:
        async with NatsBus(cluster.url, region).connect("reopen-test") as bus:
            await bus.provision()
            first = bus.signal_source(0)
            await first.open()
            await first.close()
            leader = await _publish_to_partition_0(cluster, region, signal)
            cluster.pause(leader)
            try:
                again = bus.signal_source(0)
                with anyio.fail_after(1.0):
                    await again.open()
                got: Sequence[InboundMessage] = []
                with anyio.fail_after(20):  # an election: 4 to 9 s
                    while not got:
                        got = await again.fetch(8, timeout_s=0.5)
                assert [m.data for m in got] == [encode_signal(signal)]
                await got[0].ack()
                await again.close()
            finally:
                cluster.resume(leader)


@pytest.mark.slow  # a fault test: waits out a consumer leader's election (~10 s)
async def test_a_partition_taken_over_while_its_consumer_has_no_leader_pulls_at_the_election(
) -> None:
    """A node that never opened the partition before (a dead node's, taken over while its
    consumer's leader is paused) does not wait on creates that no leader answers either: it
    pulls, the signal is in hand once a leader is elected, and the consumer is made sure of
    then."""
    region = "tot" + uuid.uuid4().hex[:6]
    signal = score_signal(region, "acct-1", f"{region}-s", T0, (("jailbreak", 0.1),))
    with EmbeddedNatsCluster() as cluster:
        async with NatsBus(cluster.url, region).connect("takeover-test-old") as bus:
            await bus.provision()
            first = bus.signal_source(0)
            await first.open()
            await first.close()
        leader = await _publish_to_partition_0(cluster, region, signal)
        survivors = ",".join(u for i, u in enumerate(cluster.urls) if i != leader)
        cluster.pause(leader)
        try:
            async with NatsBus(survivors, region).connect("takeover-test-new") as bus:
                source = bus.signal_source(0)
                await source.open()  # one unanswered create, not one a try until elected
                got: Sequence[InboundMessage] = []
                with anyio.fail_after(20):  # an election: 4 to 9 s
                    while not got:
                        got = await source.fetch(8, timeout_s=0.5)
                assert [m.data for m in got] == [encode_signal(signal)]
                await got[0].ack()
                with anyio.fail_after(20):  # made sure of once it answers
                    while not bus._provisioned:
                        await source.fetch(8, timeout_s=0.1)
                assert bus._provisioned == {durable_name(region, 0, ConsumerSettings())}
                await source.close()
        finally:
            cluster.resume(leader)


async def test_a_server_names_the_servers_it_is_routed_to() -> None:
    """What the watch asks before it moves a connection (``cluster_watch.routed_servers``): a
    server cut off from the others names itself alone, the others name each other, a stalled
    one answers nothing; so a failed write on a server routed to a majority is an election."""
    with EmbeddedNatsCluster(route_proxies=True) as cluster:
        netlocs = [u.removeprefix("nats://") for u in cluster.urls]
        with anyio.fail_after(10):
            while True:  # the routes come up after the meta leader
                views = [await routed_servers(n) for n in netlocs]
                if all(v is not None and len(v) == 3 for v in views):
                    break
                await anyio.sleep(0.1)
        cluster.cut(0)
        try:
            with anyio.fail_after(20):
                # each side sees the cut when its route to the other is found dead (the
                # server's route ping), not at the same moment
                while True:
                    views = [await routed_servers(n) for n in netlocs]
                    if views[0] == [netlocs[0]] and all(
                            v is not None and sorted(v) == sorted(netlocs[1:])
                            for v in views[1:]):
                        break
                    await anyio.sleep(0.1)
        finally:
            cluster.heal(0)
        cluster.pause(1)
        try:
            assert await routed_servers(netlocs[1], timeout_s=0.5) is None
        finally:
            cluster.resume(1)
