"""An account whose stored history cannot be read is quarantined: its signals are parked in the
dead-letter stream under reason ``quarantined``, the alarm is raised once, and the partition's
other accounts carry on (the node does not fail, so no next owner fails in turn)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import asyncpg
import pytest
from checker import score_signal
from nats.aio.client import Client

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.dlq import H_REASON
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.ports import AppendRequest
from safeguards.core.subjects import stream_name

from bus_support import publish_signals, wait_until
from store_events import make_event

P = 2
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("optimistic", [False, True])
async def test_an_unreadable_history_is_quarantined_and_its_signals_parked(
        nats_url: str, fresh_database_url: str, nc: Client, optimistic: bool) -> None:
    """``optimistic``: the first signal is decided on a guessed new state, the append is
    refused (the account has history), and the reload finds the history unreadable."""
    region = "q" + uuid.uuid4().hex[:8]
    db = fresh_database_url
    await migrate(db)
    async with PostgresEventStore(region, db) as store:
        for account in ("acct-bad", "acct-good"):
            await store.append(AppendRequest(account, 0, (make_event(account, region, 1),)))
        # A newer node's write during a rolling deploy: a schema version this codec never saw
        # (written around the chain's guard, as only a damaged or newer database would hold it).
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("UPDATE events SET schema_version = 99 "
                               "WHERE account_id = 'acct-bad'")
        finally:
            await conn.close()
        node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                    settings=NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2,
                                          optimistic_activation=optimistic),
                    static_partitions=range(P))
        bad = [score_signal(region, "acct-bad", f"{region}-bad-{i}", T0, (("cyber", 0.2),))
               for i in range(3)]
        good = score_signal(region, "acct-good", f"{region}-good", T0, (("cyber", 0.2),))
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            await publish_signals(nc.jetstream(), region, P, [bad[0], good])
            await wait_until(lambda: node.metrics.quarantined == 1, timeout_s=20)
            await publish_signals(nc.jetstream(), region, P, bad[1:])
            await wait_until(lambda: node.metrics.dead_lettered >= 3, timeout_s=20)
            assert await store.inbox_contains(good.signal_id)
            node.request_stop()
        assert node.metrics.quarantined == 1  # one alarm, not one per signal or per load
        for s in bad:
            assert not await store.inbox_contains(s.signal_id)
    js = nc.jetstream()
    dlq = stream_name(region, "DLQ")
    info = await js.stream_info(dlq)
    assert info.state.messages == 3
    reasons = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(dlq, seq)
        reasons.append((msg.headers or {}).get(H_REASON))
    assert reasons == ["quarantined"] * 3
