"""Stand-alone processes' own metrics endpoints (``--metrics-port``): a ``safeguards node``
process exports its node's counters and its relay's backlog under the region process's names,
and a classifier service's counters are served by ``adapters.metrics_endpoint``'s collector
(what a stand-alone classifier process serves them with)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import nats

from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.classifier.loader import LEXICAL_MODEL_DIR, load_model
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import MicroBatchScorer
from safeguards.adapters.embedded import free_port
from safeguards.adapters.metrics_endpoint import ClassifierCollector, metrics_endpoint

from bus_support import publish_signals
from store_events import unique_region
from strategies import score_signal

P = 4


async def _scrape_until(url: str, wanted: str, timeout_s: float = 30.0) -> str:
    async with httpx.AsyncClient(timeout=5.0) as client:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    text = (await client.get(url)).text
                except httpx.TransportError:
                    text = ""
                if wanted in text:
                    return text
                await anyio.sleep(0.2)


def _start(cmd: list[str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


@contextlib.asynccontextmanager
async def _process(cmd: list[str], tmp_path: Path, ready: str) -> AsyncIterator[None]:
    """``cmd`` running until it prints ``ready``; SIGTERM at the end, and it must exit 0."""
    out, err = tmp_path / "process.out", tmp_path / "process.err"
    proc = _start(cmd, out, err)
    try:
        with anyio.fail_after(60):
            while ready not in (out.read_text() if out.exists() else ""):
                assert proc.poll() is None, err.read_text()[-2000:]
                await anyio.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    break
                await anyio.sleep(0.1)
    assert proc.returncode == 0, err.read_text()[-3000:]


async def test_a_node_process_serves_its_counters_and_backlog_on_its_metrics_port(
        fresh_database_url: str, nats_url: str, tmp_path: Path) -> None:
    region = unique_region()
    load_producer_keys(region)  # the region's producer key, made before the node reads it
    port = free_port()
    cmd = [sys.executable, "-m", "safeguards.regions.node_cli", "node", "--region", region,
           "--nats", nats_url, "--database-url", fresh_database_url, "--node-id", "n1",
           "--partitions", str(P), "--log-level", "WARNING", "--metrics-port", str(port)]
    async with _process(cmd, tmp_path, '"ready": true'):
        nc = await nats.connect(nats_url)
        try:
            await publish_signals(nc.jetstream(), region, P, [score_signal(
                0, "acct:metrics-1", datetime.now(UTC), (("jailbreak", 0.2),), region=region)])
        finally:
            await nc.drain()
        labels = f'{{node="n1",region="{region}"}}'
        text = await _scrape_until(f"http://127.0.0.1:{port}/metrics",
                                   f"safeguards_node_signals_committed_total{labels} 1.0")
    assert f"safeguards_node_signals_received_total{labels} 1.0" in text
    assert f"safeguards_node_partitions_owned{labels} {float(P)}" in text
    assert f'safeguards_relay_backlog{{region="{region}"}} 0.0' in text
    assert f'safeguards_relay_backlog_read_failures{{region="{region}"}} 0.0' in text


async def test_a_classifier_services_counters_are_served_on_a_metrics_port(
        nats_url: str) -> None:
    region = unique_region()
    model = await anyio.to_thread.run_sync(load_model, LEXICAL_MODEL_DIR)
    nc = await nats.connect(nats_url)
    port = free_port()
    try:
        async with MicroBatchScorer(model) as scorer:
            service = ClassifierService(nc, region, scorer, ClassifierSettings(partitions=P))
            await scorer.score("what is the capital of France?", "prompt")
            with metrics_endpoint(port, "127.0.0.1", ClassifierCollector(region, service)):
                text = await _scrape_until(
                    f"http://127.0.0.1:{port}/metrics",
                    f'safeguards_classifier_requests_total{{lane="content",region="{region}"}}'
                    " 1.0")
    finally:
        await nc.drain()
    assert f'safeguards_classifier_scored_total{{region="{region}"}} 0.0' in text
    assert f'safeguards_classifier_batches_total{{lane="content",region="{region}"}} 1.0' in text
    assert f'safeguards_classifier_urgent_total{{lane="content",region="{region}"}} 0.0' in text
    assert "inline" not in text  # one scorer serves both lanes: one series
    async with httpx.AsyncClient() as client:  # the endpoint is gone with the block
        try:
            await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the metrics endpoint outlived its block")


async def test_a_classifier_serve_process_serves_its_counters_on_its_metrics_port(
        nats_url: str, tmp_path: Path) -> None:
    region = unique_region()
    load_producer_keys(region)
    port = free_port()
    cmd = [sys.executable, "-m", "safeguards.regions.command_line", "classifier", "serve",
           "--region", region, "--nats-url", nats_url, "--partitions", str(P),
           "--model", str(LEXICAL_MODEL_DIR), "--metrics-port", str(port)]
    async with _process(cmd, tmp_path, "classifier serving region"):
        text = await _scrape_until(f"http://127.0.0.1:{port}/metrics",
                                   f'safeguards_classifier_scored_total{{region="{region}"}} 0.0')
    assert f'safeguards_classifier_dead_lettered_total{{region="{region}"}}' in text
