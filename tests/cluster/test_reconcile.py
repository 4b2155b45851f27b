"""Reconciliation: a command the enforcement stream lost comes back within the reconcile
interval, with no reconnect to prompt it (a cluster's leader change elsewhere is silent)."""

from __future__ import annotations

import uuid

import anyio
import nats
import pytest

from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.relay import OutboxRelay
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import JetStreamCommands, JetStreamSignals
from safeguards.adapters.bus.signing import load_signer
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import decode_command
from safeguards.core.ports import AppendRequest
from safeguards.core.subjects import enforce_subject, stream_name

from bus_support import wait_until
from store_events import make_event, outbox_command


@pytest.mark.slow  # a cluster test (three servers), a lost command
async def test_a_lost_command_is_restored_without_a_reconnect(
        nats_cluster: EmbeddedNatsCluster) -> None:
    region = "r" + uuid.uuid4().hex[:8]
    nc = await nats.connect(nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=5)
        await provision_region(js, region)
        stream = stream_name(region, "ENFORCE")
        store = InMemoryEventStore(region)
        for version in (0, 1):
            await store.append(AppendRequest("acct-1", version, (
                make_event("acct-1", region, version + 1),), None,
                (outbox_command(region, "acct-1", version + 1),)))
        metrics = NodeMetrics()
        relay = OutboxRelay(store=store, metrics=metrics, poll_s=0.1, reconcile_s=0.5,
                            commands=JetStreamCommands(nc, region, load_signer(region)),
                            signals=JetStreamSignals(nc, region, load_producer_keys(region)))
        subject = enforce_subject(region, "acct-1")

        async def last_version() -> int:
            try:
                msg = await js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                return 0
            return decode_command(msg.data or b"").version

        async with anyio.create_task_group() as tg:
            await tg.start(relay.run)
            with anyio.fail_after(10):
                while True:
                    if await last_version() == 2:
                        break
                    await anyio.sleep(0.05)
            # the broker loses the newest command it acknowledged (as a leader dying before a
            # follower had it would): the stream is back at nothing for this account
            lost = await js.get_last_msg(stream, subject)
            await js.delete_msg(stream, lost.seq or 0)
            assert await last_version() < 2
            took = await wait_until(lambda: metrics.commands_repaired >= 1, timeout_s=10)
            assert await last_version() == 2
            assert metrics.reconciliations >= 1
            tg.cancel_scope.cancel()
        print(f"RECONCILE restored after {took:.2f}s")
    finally:
        await nc.close()
