"""Operator actions say "applied" only once the account's actor has committed them: an action
the broker lost after acknowledging it is sent again, and one nobody commits is an error."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from node_support import run_cli, running_node

from safeguards.adapters.bus.streams import provision_region
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore, migrate
from safeguards.core.events import EnforcementChanged, OperatorActionTaken
from safeguards.core.subjects import stream_name
from safeguards.ops.actions import (
    NotApplied,
    apply_operator_signal,
    now_and_nonce,
    operator_signal,
    send_operator_signal,
)

P = 4


def override(account: str, level: int) -> tuple[str, OperatorActionTaken]:
    return account, OperatorActionTaken("alice", "set_level", level, None, "case 77")


async def test_cli_waits_for_the_commit(nats_url: str, fresh_database_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    await migrate(fresh_database_url)
    async with PostgresEventStore(region, fresh_database_url) as store, \
            running_node(nats_url, region, store, P):
        assert await run_cli("ops", "override", "acct:9", "--region", region, "--nats",
                             nats_url, "--partitions", str(P), "--level", "3",
                             "--operator", "alice", "--reason", "case 77",
                             "--database-url", fresh_database_url) == 0
        out = capsys.readouterr().out
        assert out.startswith("applied ")
        assert EnforcementChanged.TYPE in out
        changes = [e.body for e in await store.history("acct:9")
                   if isinstance(e.body, EnforcementChanged)]
        assert [c.level for c in changes] == [3]


async def test_a_lost_action_is_sent_again(nats_url: str, nc: Client) -> None:
    """The broker acknowledged the action and lost it before any node read it: the wait
    re-sends it (under a message id of its own, past the duplicate window) and it applies
    once."""
    region = "t" + uuid.uuid4().hex[:8]
    add_operator(region, "alice", "admin")
    js = nc.jetstream()
    await provision_region(js, region)
    store = InMemoryEventStore(region)
    now, nonce = now_and_nonce()
    account, observation = override("acct:7", 2)
    signal = operator_signal(account, region, observation, now=now, nonce=nonce)
    await send_operator_signal(nats_url, P, signal, "alice")
    inputs = stream_name(region, "INPUTS")
    lost = await js.get_last_msg(inputs, f"sg.{region}.acct.>")
    await js.delete_msg(inputs, lost.seq or 0)  # acknowledged, then lost
    async with running_node(nats_url, region, store, P) as _:
        took = await apply_operator_signal(nats_url, P, signal, "alice", store.inbox_contains,
                                           timeout_s=20, republish_s=1.0)
    history = await store.history(account)
    assert [e.body.level for e in history if isinstance(e.body, EnforcementChanged)] == [2]
    assert 1.0 <= took < 20
    print(f"APPLIED a lost action after {took:.1f}s")


async def test_an_action_nobody_commits_is_not_applied(nats_url: str, nc: Client) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    await provision_region(nc.jetstream(), region)
    now, nonce = now_and_nonce()
    account, observation = override("acct:8", 2)
    signal = operator_signal(account, region, observation, now=now, nonce=nonce)
    store = InMemoryEventStore(region)  # no node: nothing will ever commit it
    add_operator(region, "alice", "admin")
    with pytest.raises(NotApplied):
        await apply_operator_signal(nats_url, P, signal, "alice", store.inbox_contains,
                                    timeout_s=1.5, republish_s=0.5)
