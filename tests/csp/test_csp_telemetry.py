"""The telemetry buffer: overflow and failed publishes are counted, never silent."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import anyio
import nats
from csp_testkit import eventually
from nats.aio.msg import Msg

from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.telemetry import Telemetry
from safeguards.core.codec import decode_record, decode_signal
from safeguards.core.content import ContentItem
from safeguards.core.events import RequestObserved


def test_a_full_buffer_counts_drops_without_waiting() -> None:
    telemetry = Telemetry(None, "eu", 16, capacity=2)
    request = GateRequest("acct", "r1", model="m")
    for _ in range(5):
        telemetry.emit_request(request, "allow", 1, 1)
    assert telemetry.queued == 2
    assert telemetry.dropped["buffer_full"] == 3 and telemetry.dropped_total == 3


async def test_publishes_nobody_stores_are_counted_as_failed(nats_url: str) -> None:
    region = "t" + secrets.token_hex(4)  # no streams provisioned for this region
    link = BusLink(nats_url)
    telemetry = Telemetry(link, region, 4, publish_timeout_s=0.5)
    request = GateRequest("acct", "r1", model="m")
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        await link.connected.wait()
        await tg.start(telemetry.run)
        telemetry.emit_request(request, "allow", 1, 1)
        telemetry.emit_content(request, "prompt", "some prompt text")
        await eventually(lambda: telemetry.dropped["publish_failed"] == 2)
        assert telemetry.sent == 0
        tg.cancel_scope.cancel()
    # no connection at all: counted as such
    offline = Telemetry(BusLink("nats://127.0.0.1:1"), region, 4)
    async with anyio.create_task_group() as tg:
        await tg.start(offline.run)
        offline.emit_request(request, "allow", 1, 1)
        await eventually(lambda: offline.dropped["not_connected"] == 1)
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def unstored_telemetry(nats_url: str) -> AsyncIterator[tuple[Telemetry, list[Msg]]]:
    """Running telemetry for a region whose messages a plain subscriber takes (so the server
    sends no "no responders") and no stream stores: nothing is ever acknowledged."""
    region = "t" + secrets.token_hex(4)
    nc = await nats.connect(nats_url)
    seen: list[Msg] = []

    async def take(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(f"sg.{region}.>", cb=take)
    await nc.flush()
    link = BusLink(nats_url)
    telemetry = Telemetry(link, region, 4, publish_timeout_s=0.3)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            await link.connected.wait()
            await tg.start(telemetry.run)
            yield telemetry, seen
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


async def test_publishes_nobody_acknowledges_are_swept_as_failed(nats_url: str) -> None:
    """No acknowledgement ever comes, and the sweeper counts the messages at the deadline.
    Messages of one request travel as one batch with one reply subject."""
    async with unstored_telemetry(nats_url) as (telemetry, seen):
        telemetry.emit_observed(GateRequest("acct", "r1", model="m"), "allow", 1, 1, "a prompt",
                                "a completion")
        await eventually(lambda: len(seen) == 3)
        assert len({m.reply for m in seen}) == 1  # one batch, one reply subject
        assert telemetry.dropped["publish_failed"] == 0  # not before the deadline
        await eventually(lambda: telemetry.dropped["publish_failed"] == 3, 3)
        assert telemetry.sent == 0


async def test_the_organisation_project_key_and_prompt_link_travel_with_the_signal(
        nats_url: str) -> None:
    request = GateRequest("acct", "r1", model="m", organization_id="acme", project_id="p1",
                          api_key_fingerprint="0" * 32, prompt_link="1" * 32)
    async with unstored_telemetry(nats_url) as (telemetry, seen):
        telemetry.emit_observed(request, "allow", 1, 1, "a prompt", "")
        await eventually(lambda: len(seen) == 2)
    signal = decode_signal(next(m.data for m in seen if ".acct." in m.subject))
    assert isinstance(signal.observation, RequestObserved)
    assert (signal.observation.organization_id, signal.observation.project_id,
            signal.observation.api_key_fingerprint, signal.observation.prompt_link) == (
        "acme", "p1", "0" * 32, "1" * 32)
    item = decode_record(next(m.data for m in seen if ".content." in m.subject), ContentItem)
    assert (item.account_id, item.organization_id) == ("acct", "acme")
    # a prompt is no aggregate of its content: only an actor that saw it flagged forwards it
    assert item.aggregates() == ("org:acme", "key:" + "0" * 32)
