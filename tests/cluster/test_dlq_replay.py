"""Parked signals: a quarantine is found again by the partition's next owner from one failed
load (it is not shared), and ``ops dlq replay`` re-publishes the parked signals once the history
is repaired: applied exactly once, however often it is replayed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import anyio
import asyncpg
import pytest
from checker import score_signal
from nats.aio.client import Client
from node_support import run_cli

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.dlq import H_REASON, H_SUBJECT, KEPT_PROOFS
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.ports import AppendRequest
from safeguards.core.subjects import dead_letter_subject, stream_name

from bus_support import publish_signals, wait_until
from store_events import make_event

P = 2
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def _set_schema(db: str, version: int) -> None:
    conn = await asyncpg.connect(db)
    try:  # around the chain's guard, as only a damaged or newer database would hold it
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(f"UPDATE events SET schema_version = {version} "
                           "WHERE account_id = 'acct-bad'")
    finally:
        await conn.close()


def _results(out: str) -> list[str]:
    return [json.loads(line)["result"] for line in out.splitlines() if '"result"' in line]


async def test_parked_signals_are_replayed_once_after_the_fix(
        nats_url: str, fresh_database_url: str, nc: Client,
        capsys: pytest.CaptureFixture[str]) -> None:
    region, db = "q" + uuid.uuid4().hex[:8], fresh_database_url
    await migrate(db)
    add_operator(region, "alice", "admin")
    add_operator(region, "carol", "analyst")
    js = nc.jetstream()
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2, optimistic_activation=False)
    async with PostgresEventStore(region, db) as store:
        for account in ("acct-bad", "acct-good"):
            await store.append(AppendRequest(account, 0, (make_event(account, region, 1),)))
        await _set_schema(db, 99)

        def node() -> Node:
            return Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                        settings=settings, static_partitions=range(P),
                        producers=load_producer_keys(region))

        bad = [score_signal(region, "acct-bad", f"{region}-bad-{i}", T0, (("cyber", 0.2),))
               for i in range(2)]
        good = score_signal(region, "acct-good", f"{region}-good", T0, (("cyber", 0.2),))
        first = node()
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            await publish_signals(js, region, P, [bad[0], good])
            await wait_until(lambda: first.metrics.dead_lettered == 1, timeout_s=20)
            first.request_stop()
        # The next owner knows nothing of it: its first load finds the history unreadable.
        second = node()
        async with anyio.create_task_group() as tg:
            await tg.start(second.run)
            await publish_signals(js, region, P, [bad[1]])
            took = await wait_until(lambda: second.metrics.dead_lettered == 1, timeout_s=20)
            second.request_stop()
        assert second.metrics.quarantined == 1
        with capsys.disabled():
            print(f"REDISCOVERY parked after {took:.2f}s, loads {second.metrics.loads}")

        await _set_schema(db, 1)  # the fix: a node can read the history again
        # A forged dead letter under the replayable reason: refused one by one, never sent.
        await js.publish(dead_letter_subject(region, "acct-p0"), b"\xc1 not a signal",
                         headers={H_REASON: "quarantined", H_SUBJECT: "sg.x.acct.0.y"})
        common = ("ops", "dlq", "replay", "--region", region, "--nats", nats_url,
                  "--database-url", db)
        assert await run_cli(*common, "--operator", "carol") == 2  # an analyst
        assert await run_cli(*common, "--operator", "alice", "--reason", "undecodable") == 2
        capsys.readouterr()
        assert await run_cli(*common, "--operator", "alice", "--dry-run") == 0
        dry = _results(capsys.readouterr().out)
        assert dry == ["would_replay"] * 2 + ["refused: undecodable"]
        assert await run_cli(*common, "--operator", "alice") == 0
        assert _results(capsys.readouterr().out)[:2] == ["replayed"] * 2
        assert await run_cli(*common, "--operator", "alice", "--account", "acct-bad") == 0
        assert _results(capsys.readouterr().out)[:2] == ["duplicate"] * 2  # JetStream's window

        third = node()
        async with anyio.create_task_group() as tg:
            await tg.start(third.run)
            await wait_until(lambda: third.metrics.committed == 2, timeout_s=20)
            # A replay after the duplicate window (a new message id): the inbox absorbs it.
            dlq = stream_name(region, "DLQ")
            parked = await js.get_msg(dlq, (await js.stream_info(dlq)).state.first_seq)
            headers = parked.headers or {}
            await js.publish(headers[H_SUBJECT], parked.data or b"", headers={
                "Nats-Msg-Id": "late-replay",
                **{k: headers[k] for k in KEPT_PROOFS if k in headers}})
            await wait_until(lambda: third.metrics.duplicates == 1, timeout_s=20)
            third.request_stop()
        assert third.metrics.dead_lettered == 0 and third.metrics.committed == 2
        for s in bad:
            assert await store.inbox_contains(s.signal_id)
        assert len(await store.history("acct-bad")) == 3  # its first event and the two parked
        assert await run_cli(*common, "--operator", "alice") == 0
        assert _results(capsys.readouterr().out)[:2] == ["already_applied"] * 2
        reads = [(r[1], r[2]) for r in await store.operator_reads(20)]
        assert ("alice", "dlq-replay") in reads
