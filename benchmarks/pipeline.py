"""Signals through one node vs raw JetStream consume-and-ack; signal -> enforcement latency; RSS.

1. Publishes N benign score signals over A accounts to a fresh region's input stream.
2. Raw: P plain pull consumers (one per partition, same batch size as the node) fetch and ack
   every message: the ceiling the bus alone allows in this process, measured in the same run.
3. Pipeline: one node (all P partitions, real PostgreSQL store) consumes the same messages:
   decode, decide, one transaction per group commit (inbox + events + outbox), ack after commit.
4. Latency: a separate load process publishes benign signals at half the node's measured rate
   (``--load-fraction``) and a violating signal (a severe weapons score, L0 -> L3) for a fresh
   account every 20 ms; latency is publish -> the enforcement command arriving at that
   process's subscriber of ``sg.<region>.enforce.>``.
5. Memory: RSS of this process (the node, with the raw consumers' leftovers) with all
   A >= 10,000 accounts' actors active in memory.
6. Restart: a fresh node consumes N/2 more signals for the same, now existing, accounts (every
   first touch is a refused optimistic activation plus a load): the cold-cache rate.

    python benchmarks/pipeline.py [--signals 40000] [--accounts 10000] [--latency-s 10]

Uses SAFEGUARDS_NATS_URL when set, else an embedded server, and a scratch database on
SAFEGUARDS_DATABASE_URL's server (else an embedded PostgreSQL).
Last line: {"signals_per_s", "raw_consume_per_s", "ratio", "enforce_p50_ms", "enforce_p99_ms"}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.heap import GcPauses, settle_heap
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.events import Signal
from safeguards.core.subjects import inputs_subject, partition_filter, stream_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from checker import score_signal

P = 16
BATCH = 256


# Account and signal ids carry the run's region: on a shared server (SAFEGUARDS_DATABASE_URL)
# an earlier run's accounts and inbox keys would otherwise turn this run's signals into version
# conflicts and duplicates.


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def until(predicate: Callable[[], bool], poll_s: float) -> None:
    while True:
        if predicate():
            return
        await anyio.sleep(poll_s)


async def publish_many(nc: Client, region: str, signals: list[Signal], concurrency: int = 64
                       ) -> float:
    js = nc.jetstream()
    it = iter(signals)
    start = time.perf_counter()

    async def worker() -> None:
        for s in it:
            await js.publish(inputs_subject(region, P, s.account_id), encode_signal(s),
                             headers={"Nats-Msg-Id": s.signal_id}, timeout=10)

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - start


async def raw_consume(nc: Client, region: str, total: int) -> float:
    """P durable pull consumers fetching BATCH at a time and acking each message."""
    js = nc.jetstream()
    stream = stream_name(region, "INPUTS")
    done = 0
    start = time.perf_counter()

    async def consume(p: int) -> None:
        nonlocal done
        name = f"raw-{p}"
        await js.add_consumer(stream, api.ConsumerConfig(
            durable_name=name, filter_subject=partition_filter(region, p),
            ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=2048, ack_wait=30))
        sub = await js.pull_subscribe_bind(name, stream=stream)
        while done < total:
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for m in msgs:
                await m.ack()
            done += len(msgs)

    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            for p in range(P):
                tg.start_soon(consume, p)
    return total / (time.perf_counter() - start)


async def main(args: argparse.Namespace, db_url: str) -> dict[str, float]:
    region = "bench" + uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        nats_url = os.environ.get("SAFEGUARDS_NATS_URL") or stack.enter_context(
            EmbeddedNats()).url
        await migrate(db_url)  # a scratch database: a database holds one region
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await provision_region(js, region)
        t0 = datetime.now(UTC)
        signals = [score_signal(region, f"{region}-{i % args.accounts}", f"{region}-s-{i}", t0,
                                (("jailbreak", 0.1), ("cyber", 0.05)))
                   for i in range(args.signals)]
        took = await publish_many(nc, region, signals)
        print(f"published {len(signals)} signals over {args.accounts} accounts "
              f"in {took:.1f}s ({len(signals) / took:.0f}/s)", flush=True)

        raw = await raw_consume(nc, region, len(signals))
        print(f"raw consume-and-ack: {raw:.0f} msgs/s ({P} consumers, batch {BATCH})", flush=True)
        rss_before = rss_mb()

        # As `safeguards node` does once started: the start-up heap (here also the benchmark's
        # own signal lists) leaves the collector's scans.
        settle_heap()
        async with PostgresEventStore(region, db_url, pool_size=P) as store:
            settings = NodeSettings(fetch_batch=BATCH, passivate_after_s=3600)
            node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                        settings=settings, static_partitions=range(P))
            async with anyio.create_task_group() as tg:
                start, cpu0 = time.perf_counter(), time.process_time()
                await tg.start(node.run)
                with anyio.fail_after(600):
                    await until(lambda: node.metrics.committed >= len(signals), 0.01)
                elapsed = time.perf_counter() - start
                backlog_cpu_us = (time.process_time() - cpu0) / len(signals) * 1e6
                rate = len(signals) / elapsed
                print(f"pipeline: {rate:.0f} signals/s through one node "
                      f"({node.metrics.batches} batches, {node.metrics.loads} loads, "
                      f"{node.metrics.conflicts} conflicts)", flush=True)
                actors = sum(len(r.worker.actors) for r in node.running.values())
                rss = rss_mb()
                print(f"memory: RSS {rss:.0f} MB with {actors} active actors in memory "
                      f"(process held {rss_before:.0f} MB before the node started)", flush=True)

                # Latency at half the node's rate: benign load plus violating signals.
                # The load comes from another process, as it would from the inline adapters:
                # the node's event loop runs only the node.
                half = rate * args.load_fraction
                committed0, cpu0 = node.metrics.committed, time.process_time()
                assert node.committer is not None
                cycles0, batches0 = node.committer.cycles, node.metrics.batches
                with GcPauses() as pauses:
                    client = await anyio.run_process(
                        [sys.executable, __file__, "--load-client", nats_url, region, str(half),
                         str(args.accounts), str(args.latency_s)], check=True)
                live_signals = max(1, node.metrics.committed - committed0)
                live_cpu_us = (time.process_time() - cpu0) / live_signals * 1e6
                live_cycles = node.committer.cycles - cycles0
                live_batches = node.metrics.batches - batches0
                load = json.loads(client.stdout.decode().splitlines()[-1])
                node.request_stop()
            # A restarted node: every account exists in the store and none is in memory, so
            # each first signal costs a refused optimistic activation and a load.
            again = [score_signal(region, f"{region}-{i % args.accounts}", f"{region}-r-{i}",
                                  datetime.now(UTC), (("jailbreak", 0.1),))
                     for i in range(args.signals // 2)]
            await publish_many(nc, region, again)
            cold = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                        settings=settings, static_partitions=range(P))
            async with anyio.create_task_group() as tg:
                start = time.perf_counter()
                await tg.start(cold.run)
                with anyio.fail_after(600):
                    await until(lambda: cold.metrics.committed >= len(again), 0.01)
                cold_rate = len(again) / (time.perf_counter() - start)
                cold.request_stop()
            print(f"restarted node over existing accounts: {cold_rate:.0f} signals/s "
                  f"({cold.metrics.loads} loads, {cold.metrics.activations_refused} refused "
                  f"activations)", flush=True)
        lat = sorted(load["latencies_ms"])
        missing = load["missing"]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"signal -> enforcement at {load['benign_per_s']:.0f} signals/s "
              f"(target {half:.0f}): p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms over {len(lat)} violations ({missing} missing); node process "
              f"GC meanwhile: {pauses.summary()}", flush=True)
        print(f"node CPU per signal: {backlog_cpu_us:.0f} us on the backlog, {live_cpu_us:.0f} us "
              f"live at half rate (x{live_cpu_us / backlog_cpu_us:.2f}); the load process spent "
              f"{load['client_cpu_s']:.1f} s of CPU in {args.latency_s:.0f} s; live: "
              f"{live_batches} partition batches ({live_signals / max(1, live_batches):.1f} "
              f"signals each), {live_cycles} commit cycles "
              f"({live_signals / max(1, live_cycles):.1f} appends each)", flush=True)
        await nc.close()
    return {"signals_per_s": round(rate, 1), "raw_consume_per_s": round(raw, 1),
            "ratio": round(rate / raw, 3), "enforce_p50_ms": round(p50, 2),
            "enforce_p99_ms": round(p99, 2), "rss_mb_10k_actors": round(rss, 1),
            "active_actors": actors, "restarted_signals_per_s": round(cold_rate, 1)}


async def load_client(nats_url: str, region: str, rate: float, accounts: int,
                      seconds: float) -> dict[str, object]:
    """Benign signals at ``rate`` plus a violating one (a fresh account, severe weapons score)
    every 20 ms; the latency of each is publish -> its command arriving at our subscriber."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}

    async def on_command(msg: Msg) -> None:
        arrivals.setdefault(decode_command(msg.data).account_id, time.perf_counter())

    await nc.subscribe(f"sg.{region}.enforce.>", cb=on_command)
    benign_sent = 0

    # Encoded up front: the load generator's own work must not eat the node's CPU share.
    now = datetime.now(UTC)
    payloads = []
    for i in range(int(rate * seconds) + 1):
        s = score_signal(region, f"{region}-{i % accounts}", f"{region}-b-{i}", now,
                         (("jailbreak", 0.1),))
        payloads.append((inputs_subject(region, P, s.account_id), encode_signal(s)))
    end = time.perf_counter() + seconds

    async def benign() -> None:
        # Paced in 2 ms ticks (what is due goes out together): a timer per message would cost
        # the load process more CPU than the node spends on it, on the node's machine.
        nonlocal benign_sent
        t0 = time.perf_counter()
        while benign_sent < len(payloads):
            now = time.perf_counter()
            if now >= end:
                break
            due = min(len(payloads), int((now - t0) * rate) + 1)
            while benign_sent < due:
                subject, payload = payloads[benign_sent]
                # Fire-and-forget into the stream (no PubAck wait); the violating signals
                # below do wait for theirs.
                await nc.publish(subject, payload)
                benign_sent += 1
            await anyio.sleep(0.002)

    async def violating() -> None:
        j = 0
        while time.perf_counter() < end:
            acct = f"{region}-viol-{j}"
            s = score_signal(region, acct, f"{region}-v-{j}", datetime.now(UTC),
                             (("weapons", 0.97),))
            sent[acct] = time.perf_counter()
            await js.publish(inputs_subject(region, P, acct), encode_signal(s), timeout=10)
            j += 1
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        tg.start_soon(benign)
        tg.start_soon(violating)
    with anyio.move_on_after(10):
        await until(lambda: len(arrivals.keys() & sent.keys()) >= len(sent), 0.05)
    await nc.close()
    lat = [(arrivals[a] - t) * 1000 for a, t in sent.items() if a in arrivals]
    return {"latencies_ms": lat, "missing": len(sent) - len(lat), "benign": benign_sent,
            "benign_per_s": benign_sent / seconds, "client_cpu_s": time.process_time()}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load-client":
        url, reg, rate_s, accounts_s, seconds_s = sys.argv[2:7]
        out = anyio.run(load_client, url, reg, float(rate_s), int(accounts_s), float(seconds_s))
        print(json.dumps(out))
        sys.exit(0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--signals", type=int, default=40_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--load-fraction", type=float, default=0.5,
                        help="latency phase load as a fraction of the measured node rate")
    with scratch_database("sg_pipeline") as scratch:
        result = anyio.run(main, parser.parse_args(), scratch)
    print(json.dumps({k: result[k] for k in ("signals_per_s", "raw_consume_per_s", "ratio",
                                              "enforce_p50_ms", "enforce_p99_ms")}))
