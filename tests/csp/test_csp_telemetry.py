"""The telemetry buffer: overflow and failed publishes are counted, never silent."""

from __future__ import annotations

import secrets

import anyio

from safeguards.adapters.csp.gate import GateRequest
from safeguards.adapters.csp.link import BusLink
from safeguards.adapters.csp.telemetry import Telemetry
from safeguards.adapters.csp.testkit import eventually


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
