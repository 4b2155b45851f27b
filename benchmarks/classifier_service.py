"""Classifier service throughput through NATS: content stream in, ScoreRecorded signals out.

Publishes N content items to a fresh region's CONTENT stream, then starts the service and times
until every item's signal is published and confirmed. Uses ``SAFEGUARDS_NATS_URL`` when set,
otherwise an embedded nats-server. Also times sequential ``classify`` request/reply round trips.
Last line: ``{"content_items_per_s", "classify_p50_ms", "classify_p99_ms", "provider"}``.

    python benchmarks/classifier_service.py [--items 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import anyio
import nats
import numpy as np
from classifier import workload  # type: ignore[import-not-found]

from safeguards.adapters.bus.streams import StreamSettings, ensure_stream, inputs_config
from safeguards.adapters.classifier.loader import load_model
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import MicroBatchScorer
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.core.codec import decode_record, encode_record
from safeguards.core.content import ClassifyReply, ClassifyRequest, ContentItem
from safeguards.core.subjects import classify_subject, content_subject


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    url = os.environ.get("SAFEGUARDS_NATS_URL")
    if url:
        yield url
        return
    with EmbeddedNats() as server:
        yield server.url


async def run(url: str, items: int) -> dict[str, object]:
    region = "b" + secrets.token_hex(3)
    texts = workload(items)
    nc = await nats.connect(url, connect_timeout=5)
    js = nc.jetstream(timeout=10)
    model = load_model(intra_op_threads=1)
    try:
        await ensure_stream(js, inputs_config(region, StreamSettings()))
        async with MicroBatchScorer(model) as scorer, anyio.create_task_group() as tg:
            service = ClassifierService(nc, region, scorer, ClassifierSettings(partitions=16))
            await service.provision()
            for i, text in enumerate(texts):
                item = ContentItem(f"r{i}", f"acct-{i % 200}", region, "prompt", text,
                                   datetime.now(UTC), f"c{i}")
                await js.publish(content_subject(region, item.account_id), encode_record(item))
            started = time.perf_counter()
            await tg.start(service.run)
            with anyio.fail_after(300):
                while service.stats.published < items:  # noqa: ASYNC110 - polling a counter
                    await anyio.sleep(0.02)
            elapsed = time.perf_counter() - started
            print(f"content -> signal: {items / elapsed:.0f} items/s ({items} items in "
                  f"{elapsed:.1f} s, mean batch {scorer.stats.mean_batch:.1f} windows)")

            latencies = []
            for text in texts[:1000]:
                req = ClassifyRequest("q", region, "prompt", text, 50.0)
                t0 = time.perf_counter()
                msg = await nc.request(classify_subject(region), encode_record(req), timeout=2)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert decode_record(msg.data, ClassifyReply).error is None
            p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
            print(f"classify round trip (sequential, deadline 50 ms): p50 {p50:.2f} ms, "
                  f"p99 {p99:.2f} ms")
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
    return {"content_items_per_s": round(items / elapsed, 1), "classify_p50_ms": round(p50, 2),
            "classify_p99_ms": round(p99, 2), "provider": model.provider}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    args = parser.parse_args()
    with nats_server() as url:
        result = anyio.run(run, url, args.items)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
