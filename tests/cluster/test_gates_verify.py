"""``ops gates verify``: an enforcement command the stream lost is reported (the gates would
apply none), and after the relay's repair nothing is; a command on the stream that the gates
would refuse (unsigned, or signed by a key they do not trust) is reported as forged, and the
relay's repair lays the stored command over it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client
from node_support import run_cli

from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.relay import OutboxRelay
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.region import JetStreamCommands, JetStreamSignals
from safeguards.adapters.bus.signing import CommandSigner, load_signer
from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.ports import AppendRequest
from safeguards.core.subjects import enforce_subject, stream_name

from store_events import make_event, outbox_command


@asynccontextmanager
async def published(nc: Client, region: str, db: str, accounts: tuple[str, ...], *,
                    commands: int) -> AsyncIterator[tuple[PostgresEventStore, OutboxRelay]]:
    """A region whose ``accounts`` each have ``commands`` commands committed and published by
    a relay (returned, for its repair)."""
    await migrate(db)
    await provision_region(nc.jetstream(timeout=5), region)
    async with PostgresEventStore(region, db) as store:
        for account in accounts:
            for version in range(commands):
                await store.append(AppendRequest(account, version, (
                    make_event(account, region, version + 1),), None,
                    (outbox_command(region, account, version + 1),)))
        relay = OutboxRelay(store=store, metrics=NodeMetrics(),
                            commands=JetStreamCommands(nc, region, load_signer(region)),
                            signals=JetStreamSignals(nc, region, load_producer_keys(region)))
        assert await relay.flush() == len(accounts) * commands
        yield store, relay


async def test_a_lost_command_is_reported_until_repaired(
        nats_url: str, fresh_database_url: str, nc: Client,
        capsys: pytest.CaptureFixture[str]) -> None:
    region, db = "g" + uuid.uuid4().hex[:8], fresh_database_url
    js = nc.jetstream(timeout=5)
    async with published(nc, region, db, ("acct-1", "acct-2"), commands=2) as (store, relay):
        verify = ("ops", "gates", "verify", "--region", region, "--nats", nats_url,
                  "--database-url", db, "--operator", "alice")
        capsys.readouterr()
        assert await run_cli(*verify) == 0
        assert json.loads(capsys.readouterr().out)["summary"]["ok"] == 2

        stream = stream_name(region, "ENFORCE")
        lost = await js.get_last_msg(stream, enforce_subject(region, "acct-1"))
        await js.delete_msg(stream, lost.seq or 0)  # the broker loses the newest command
        assert await run_cli(*verify) == 1
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        # (the stream keeps one command per account: losing it leaves none, not an older one)
        assert lines[0] == {"account": "acct-1", "outcome": "missing",
                            "store": {"version": 2, "level": 1}, "stream": None}
        assert lines[-1]["summary"]["missing"] == 1 and lines[-1]["summary"]["ok"] == 1

        assert await relay.repair() == 1
        assert await run_cli(*verify) == 0
        assert json.loads(capsys.readouterr().out)["summary"]["ok"] == 2
        reads = [(r[1], r[2]) for r in await store.operator_reads(10)]
        assert reads.count(("alice", "gates-verify")) == 3


async def test_a_command_the_gates_would_refuse_is_reported_as_forged(
        nats_url: str, fresh_database_url: str, nc: Client,
        capsys: pytest.CaptureFixture[str]) -> None:
    region, db = "g" + uuid.uuid4().hex[:8], fresh_database_url
    js = nc.jetstream(timeout=5)
    async with published(nc, region, db, ("acct-1", "acct-2", "acct-3"), commands=1) as (
            _store, relay):
        # Someone with write access to the stream lays a newer command over acct-1 unsigned,
        # and one over acct-2 signed with a key of their own.
        own_key = CommandSigner(Ed25519PrivateKey.generate())
        for account, sign in (("acct-1", False), ("acct-2", True)):
            forged = outbox_command(region, account, 9)
            await js.publish(forged.subject, forged.payload,
                             headers=own_key.headers(forged.subject, forged.payload)
                             if sign else None)
        capsys.readouterr()
        assert await run_cli("ops", "gates", "verify", "--region", region, "--nats", nats_url,
                             "--database-url", db, "--operator", "alice") == 1
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        reasons = {line["subject"]: line["reason"] for line in lines[:-1]}
        assert reasons == {enforce_subject(region, "acct-1"): "unsigned",
                          enforce_subject(region, "acct-2"): "unknown_key"}
        assert lines[-1]["summary"]["forged"] == 2 and lines[-1]["summary"]["ok"] == 1
        # The relay's repair reads a forged command as none (it had read the newer forged
        # version as newer than the store's and left it) and lays the stored one over it.
        assert await relay.repair() == 2
        assert await run_cli("ops", "gates", "verify", "--region", region, "--nats", nats_url,
                             "--database-url", db, "--operator", "alice") == 0
        assert json.loads(capsys.readouterr().out)["summary"]["ok"] == 3

