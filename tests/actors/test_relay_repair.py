"""The relay's repair after a reconnect: a command the broker acknowledged and then lost (a
killed single server) is re-published; a newer one in the stream is never overwritten."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client

from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.relay import OutboxRelay
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import JetStreamCommands, JetStreamSignals
from safeguards.adapters.bus.signing import load_signer
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import decode_command, encode_signal
from safeguards.core.events import ScoreRecorded, Signal
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.subjects import enforce_subject, inputs_subject, stream_name

from store_events import make_event, outbox_command


def forward(region: str, signal_id: str) -> OutboxMessage:
    """An outbox row forwarding a score to a prompt's history (``core.prompt_links``)."""
    prompt = "prompt:" + "ab" * 16
    signal = Signal(signal_id, prompt, region, datetime(2026, 11, 27, tzinfo=UTC), "c",
                    ScoreRecorded("req-1", "prompt", "0" * 64, 10, "m", "1", (("cyber", 0.8),),
                                  member_account="acct-1"))
    return OutboxMessage(signal_id, inputs_subject(region, 16, prompt), encode_signal(signal))


def relay_for(nc: Client, store: InMemoryEventStore, region: str, metrics: NodeMetrics,
              **kwargs: Any) -> OutboxRelay:
    return OutboxRelay(store=store, commands=JetStreamCommands(nc, region, load_signer(region)),
                       signals=JetStreamSignals(nc, region, load_producer_keys(region)),
                       metrics=metrics, **kwargs)


async def test_a_forwarded_signal_goes_to_the_inputs_stream_signed_once(nc: Client) -> None:
    """A row on an input subject goes to the inputs stream (not the enforcement stream) with the
    region's producer MAC that nodes check, once however often it is relayed."""
    region = "r" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    await provision_region(js, region)
    store = InMemoryEventStore(region)
    row = forward(region, "fwd-1")
    await store.append(AppendRequest("acct-1", 0, (make_event("acct-1", region, 1),), None,
                                     (row, outbox_command(region, "acct-1", 1))))
    relay = relay_for(nc, store, region, NodeMetrics())
    assert await relay.flush() == 2
    await relay._publish(row)  # a re-publish (a crash before the mark): deduplicated
    inputs = stream_name(region, "INPUTS")
    info = await js.stream_info(inputs)
    assert info.state.messages == 1
    got = await js.get_last_msg(inputs, row.subject)
    assert got.data == row.payload and got.headers is not None
    assert load_producer_keys(region).problem(row.subject, row.payload, dict(got.headers)) is None
    enforced = await js.get_last_msg(stream_name(region, "ENFORCE"),
                                      enforce_subject(region, "acct-1"))
    assert enforced.data is not None and decode_command(enforced.data).version == 1


async def test_repair_restores_lost_commands_and_never_goes_back(nc: Client) -> None:
    region = "r" + uuid.uuid4().hex[:8]
    js = nc.jetstream()
    await provision_region(js, region)
    stream = stream_name(region, "ENFORCE")
    store = InMemoryEventStore(region)
    messages = {a: [outbox_command(region, a, v) for v in (1, 2)]
                for a in ("lost", "kept", "newer")}
    for account, (first, second) in messages.items():
        for version, m in ((0, first), (1, second)):
            await store.append(AppendRequest(account, version, (make_event(account, region,
                                                                           version + 1),),
                                             None, (m,)))
    await store.mark_published([p.outbox_id for p in await store.pending_outbox(100)])

    async def publish(m: OutboxMessage) -> None:  # as a relay did before the crash: signed
        await js.publish(m.subject, m.payload, stream=stream, headers={
            "Nats-Msg-Id": m.message_id, **load_signer(region).headers(m.subject, m.payload)})

    # What survived the broker's crash: "lost" kept only v1, "kept" both, "newer" got a v3 from
    # another relay after the crash, and "gone" has nothing at all.
    await publish(messages["lost"][0])
    for m in messages["kept"]:
        await publish(m)
    await publish(outbox_command(region, "newer", 3))
    gone = outbox_command(region, "gone", 1)
    await store.append(AppendRequest("gone", 0, (make_event("gone", region, 1),), None, (gone,)))
    await store.mark_published([p.outbox_id for p in await store.pending_outbox(100)])
    # A forwarded signal among the published rows is not a command: repair leaves it alone.
    forwarded = forward(region, "fwd-1")
    await store.append(AppendRequest("fwd", 0, (make_event("fwd", region, 1),), None,
                                     (forwarded,)))
    await store.mark_published([p.outbox_id for p in await store.pending_outbox(100)])

    reconnects = 0
    metrics = NodeMetrics()
    relay = relay_for(nc, store, region, metrics, reconnects=lambda: reconnects)
    assert await relay.repair() == 2  # "lost" v2 and "gone" v1

    async def last_version(account: str) -> int:
        msg = await js.get_last_msg(stream, enforce_subject(region, account))
        assert msg.data is not None
        return decode_command(msg.data).version

    assert [await last_version(a) for a in ("lost", "kept", "newer", "gone")] == [2, 2, 3, 1]
    assert await relay.repair() == 0  # nothing left to restore
    assert metrics.commands_repaired == 2
