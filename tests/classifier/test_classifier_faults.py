"""The classifier service through a NATS crash: its own server, SIGKILLed and restarted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import nats
import pytest

from safeguards.adapters.bus.streams import StreamSettings, ensure_stream, inputs_config
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import MicroBatchScorer
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.core.codec import decode_signal, encode_record
from safeguards.core.content import ContentItem
from safeguards.core.events import ScoreRecorded
from safeguards.core.subjects import content_subject, inputs_subject, stream_name

pytestmark = pytest.mark.slow
P = 4


def _item(region: str, n: int) -> ContentItem:
    return ContentItem(request_id=f"r{n}", account_id="acct-f", region=region, kind="prompt",
                       text=f"Please summarise chapter {n} of the gardening handbook.",
                       occurred_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
                       correlation_id=f"c{n}")


async def test_scoring_resumes_after_a_nats_crash(tmp_path: Path,
                                                  classifier_model: LoadedModel) -> None:
    region = "tfault"
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        js = nc.jetstream(timeout=5)
        await ensure_stream(js, inputs_config(region, StreamSettings()))
        settings = ClassifierSettings(partitions=P, retry_delay_s=0.05, publish_timeout_s=2.0)
        async with MicroBatchScorer(classifier_model) as scorer, anyio.create_task_group() as tg:
            service = ClassifierService(nc, region, scorer, settings)
            await tg.start(service.run)
            for n in range(5):
                await js.publish(content_subject(region, "acct-f"), encode_record(_item(region, n)))
            with anyio.fail_after(15):
                while service.stats.published < 5:  # noqa: ASYNC110 - polling a counter
                    await anyio.sleep(0.05)

            server.kill()
            await anyio.sleep(0.5)
            server.start()

            with anyio.fail_after(30):
                while True:
                    try:
                        for n in range(5, 10):
                            await js.publish(content_subject(region, "acct-f"),
                                             encode_record(_item(region, n)))
                        break
                    except (nats.errors.Error, nats.js.errors.APIError):
                        await anyio.sleep(0.2)  # still reconnecting
                while service.stats.published < 10:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

        sub = await js.pull_subscribe(inputs_subject(region, P, "acct-f"),
                                      stream=stream_name(region, "INPUTS"))
        seen: set[str] = set()
        with anyio.fail_after(10):
            while len(seen) < 10:
                for m in await sub.fetch(10, timeout=2):
                    obs = decode_signal(m.data).observation
                    assert isinstance(obs, ScoreRecorded)
                    seen.add(obs.request_id)
                    await m.ack()
        assert seen == {f"r{n}" for n in range(10)}
        await nc.close()
    finally:
        server.close()
