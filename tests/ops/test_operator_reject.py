"""``ops reject`` through a real node: an admin's rejection drops the action awaiting approval,
so a later approval of it carries nothing out; an analyst's is refused by the node."""

from __future__ import annotations

import uuid

import anyio
from node_support import run_cli, running_node

from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.events import OperatorActionTaken

P = 4


async def test_an_admins_rejection_drops_the_request_through_the_cli(nats_url: str) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    common = ["--region", region, "--nats", nats_url, "--partitions", str(P)]
    async with running_node(nats_url, region, store, P):
        assert await run_cli("ops", "override", "acct:6", *common, "--level", "5",
                             "--operator", "alice", "--reason", "case 6") == 0
        assert await run_cli("ops", "reject", "acct:6", *common, "--level", "5",
                             "--operator", "bob", "--reason", "not enough") == 0
        assert await run_cli("ops", "approve", "acct:6", *common, "--level", "5",
                             "--operator", "carol", "--reason", "analysts may not") == 0
        assert await run_cli("ops", "approve", "acct:6", *common, "--level", "5",
                             "--operator", "bob", "--reason", "after all") == 0
        with anyio.fail_after(20):
            while True:
                if len(await store.history("acct:6")) >= 3:
                    break
                await anyio.sleep(0.05)
    history = await store.history("acct:6")
    assert [e.type for e in history] == ["ApprovalRequested", "OperatorActionTaken",
                                         "OperatorActionTaken"]
    actions = [(e.body.operator, e.body.action) for e in history
               if isinstance(e.body, OperatorActionTaken)]
    assert actions == [("bob", "reject"), ("bob", "approve")]  # carol's was dead-lettered
    state = await store.load("acct:6")
    assert state.level == 0 and state.pending_approval is None
