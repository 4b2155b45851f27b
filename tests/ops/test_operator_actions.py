"""Operator actions through the CLI reach the account's actor on a real NATS and land in the
history with the operator's identity and reason; bad actions are refused before sending."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from node_support import run_cli, running_node

from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.errors import InvalidInput
from safeguards.core.events import EnforcementChanged, OperatorActionTaken
from safeguards.ops.actions import operator_signal

from bus_support import wait_until

P = 4


async def test_override_clear_and_appeal_through_a_node(nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    common = ["--region", region, "--nats", nats_url, "--partitions", str(P)]
    async with running_node(nats_url, region, store, P) as (levels, _):
        # L3: below the two-person threshold, so one admin's overturn lowers it (from L4 it
        # would wait for a second admin: tests/core/test_decide_appeals.py)
        assert await run_cli("ops", "override", "acct:1", *common, "--level", "3",
                             "--operator", "alice", "--reason", "case 4411") == 0
        await wait_until(lambda: 3 in levels)
        assert await run_cli("ops", "appeal-file", "acct:1", *common, "--appeal-id", "A-1",
                             "--by", "acct:1", "--operator", "carol", "--reason", "research") == 0
        assert await run_cli("ops", "appeal-resolve", "acct:1", *common, "--appeal-id", "A-1",
                             "--outcome", "overturned", "--level-after", "0",
                             "--operator", "bob", "--reason", "false positive") == 0
        await wait_until(lambda: levels[-1:] == [0])
    history = await store.history("acct:1")
    changes = [e.body for e in history if isinstance(e.body, EnforcementChanged)]
    assert [c.level for c in changes] == [3, 0]
    assert changes[0].reason == "operator alice: case 4411"
    assert changes[1].rule_id == "appeal.overturned"
    assert (await store.load("acct:1")).open_appeals == ()


async def test_bad_actions_are_refused_before_sending(nats_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="reason"):
        operator_signal("acct", "eu", OperatorActionTaken("alice", "set_level", 3, None, " "),
                        now=now, nonce="n")
    with pytest.raises(InvalidInput, match="printable ASCII"):
        operator_signal("bad account", "eu",
                        OperatorActionTaken("alice", "set_level", 3, None, "why"),
                        now=now, nonce="n")
    assert await run_cli("ops", "override", "bad account", "--region", "eu", "--nats", nats_url,
                         "--level", "3", "--operator", "alice", "--reason", "why") == 2
    assert "printable ASCII" in capsys.readouterr().err


async def test_terminating_takes_a_second_admin_through_the_cli(nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    common = ["--region", region, "--nats", nats_url, "--partitions", str(P)]
    async with running_node(nats_url, region, store, P) as (levels, _):
        assert await run_cli("ops", "override", "acct:5", *common, "--level", "5",
                             "--operator", "alice", "--reason", "case 5") == 0
        assert await run_cli("ops", "approve", "acct:5", *common, "--level", "5",
                             "--operator", "bob", "--reason", "read case 5") == 0
        await wait_until(lambda: 5 in levels)
    history = await store.history("acct:5")
    assert [e.type for e in history] == ["ApprovalRequested", "OperatorActionTaken",
                                         "ApprovalGranted", "EnforcementChanged"]
    changed = history[-1].body
    assert isinstance(changed, EnforcementChanged)
    assert changed.reason == "operator alice, approved by bob: case 5"
