"""A region on a three-node JetStream cluster loses nothing when its inputs stream's leader is
killed under load: two actor-node processes, a real gate following the enforcement stream, and
the end-to-end checker (inputs vs store vs enforcement stream vs the gate's cache)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import anyio
import pytest
from fault_harness import check, following_gate, make_signals, region_load
from node_process import NodeProcess

from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.subjects import stream_name

pytestmark = pytest.mark.slow

P = 4


async def test_killing_the_inputs_leader_under_load_loses_nothing(
        fresh_database_url: str, tmp_path: Path) -> None:
    region = "c" + uuid.uuid4().hex[:8]
    db = fresh_database_url
    await migrate(db)
    with EmbeddedNatsCluster(tmp_path / "nats") as cluster:
        nodes = [NodeProcess(region=region, nats_url=cluster.url, database_url=db,
                             node_id=f"n{i}", log_dir=tmp_path, partitions=P) for i in range(2)]
        try:
            for n in nodes:
                await n.wait_ready()
            async with region_load(cluster.url, region, P) as load, \
                    PostgresEventStore(region, db) as store, \
                    following_gate(cluster.url, region) as gate:
                stop = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load.steady, make_signals(region, 600, 60, seed=3), 40.0,
                                  stop)
                    await anyio.sleep(4)
                    victim = await cluster.stream_leader(load.nc, stream_name(region, "INPUTS"),
                                                         timeout_s=30)
                    cluster.kill(victim)
                    killed = time.monotonic()
                    recovery = await load.probe(store, "killed", timeout_s=40)
                    await anyio.sleep(max(0.0, killed + 5 - time.monotonic()))
                    cluster.restart(victim)
                    await anyio.sleep(3)
                    stop.set()
                result = await check(store, load, gate, timeout_s=60)
        finally:
            for n in nodes:
                await n.terminate()
    summary = {**result.report.summary(), "gate_stale": len(result.gate_stale),
               "recovery_s": recovery, "publish_retries": load.publish_retries}
    print("CLUSTER_FAULTS " + json.dumps(summary), flush=True)
    assert result.report.lost == [] and result.report.double_applied == []
    assert result.ok, summary
    assert result.report.accounted == len(load.signals) > 100
