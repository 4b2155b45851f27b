"""A connection leaving one server of a cluster goes to another, never straight back.

nats-py's own choice shuffles every server, the one just left included: a server that is
paused (SIGSTOP) still accepts TCP connections, so a move back to it sat out the whole connect
timeout while the partitions' leases ran out (``bus.connect.ServerRotation``).
"""

from __future__ import annotations

import time

import anyio

from safeguards.adapters.bus.connect import CONNECT_TIMEOUT_S, connect
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster


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
