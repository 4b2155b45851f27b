"""Only a registered operator, whose role allows it, acting in its own name, changes an account:
forged, unsigned, impersonating or over-reaching operator actions are dead-lettered alone and
change nothing (a node on the in-memory bus, checked against its store)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import anyio
import pytest

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.operators import OperatorRegistry, OperatorSigner, add_operator
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.errors import InvalidInput
from safeguards.core.events import (
    AppealFiled,
    EnforcementChanged,
    Observation,
    OperatorActionTaken,
    PolicyProposed,
    ReviewClaimed,
)
from safeguards.core.operators import NoOperators, role_problem
from safeguards.core.subjects import inputs_subject
from safeguards.ops.actions import operator_signal

from bus_support import wait_until

P = 2
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def test_what_each_role_may_do() -> None:
    l5 = OperatorActionTaken("x", "set_level", 5, None, "r")
    l3 = OperatorActionTaken("x", "set_level", 3, None, "r")
    clear = OperatorActionTaken("x", "clear", None, None, "r")
    assert role_problem("admin", l5) is None and role_problem("admin", clear) is None
    assert role_problem("analyst", l3) is None
    assert role_problem("analyst", ReviewClaimed("x", "r")) is None
    assert role_problem("analyst", AppealFiled("A", "acct", "r")) is None
    assert role_problem("analyst", l5) and role_problem("analyst", clear)
    assert role_problem("analyst", PolicyProposed("x", "r", "doc"))
    assert role_problem("viewer", l3) and role_problem("nobody", l3)


async def test_only_registered_operators_in_their_own_name_and_role_act() -> None:
    region = "o" + uuid.uuid4().hex[:8]
    add_operator(region, "alice", "admin")
    add_operator(region, "bob", "admin")
    add_operator(region, "carol", "analyst")
    add_operator("elsewhere", "mallory", "admin")  # a key, but not this region's operator
    broker = MemoryBroker(region)
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.05,
                                                             relay_poll_s=0.05),
                static_partitions=range(P), operators=OperatorRegistry(region))

    def send(account: str, observation: Observation, signer: str | None) -> None:
        signal = operator_signal(account, region, observation, now=T0,
                                 nonce=secrets.token_hex(4))
        subject, data = inputs_subject(region, P, account), encode_signal(signal)
        headers = OperatorSigner(signer).headers(subject, data) if signer else {}
        broker.publish_input(subject, data, headers)

    send("acct-1", OperatorActionTaken("alice", "set_level", 5, None, "case 1"), "alice")
    # terminating takes two admins: not alice again, not an analyst; bob carries it out
    send("acct-1", OperatorActionTaken("alice", "approve", 5, None, "mine"), "alice")
    send("acct-1", OperatorActionTaken("carol", "approve", 5, None, "agree"), "carol")  # role
    send("acct-1", OperatorActionTaken("bob", "approve", 5, None, "read case 1"), "bob")
    send("acct-1", OperatorActionTaken("mallory", "clear", None, None, "x"), None)  # unsigned
    send("acct-1", OperatorActionTaken("mallory", "clear", None, None, "x"), "mallory")
    send("acct-1", OperatorActionTaken("alice", "clear", None, None, "x"), "carol")  # as alice
    send("acct-1", OperatorActionTaken("carol", "clear", None, None, "x"), "carol")  # role
    send("acct-2", OperatorActionTaken("carol", "set_level", 3, None, "case 2"), "carol")
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 30)
        node.request_stop()

    assert [d.reason for d in broker.dead_letters] == ["operator_unverified"] * 5
    levels = {a: [e.body.level for e in await store.history(a)
                  if isinstance(e.body, EnforcementChanged)] for a in ("acct-1", "acct-2")}
    assert levels == {"acct-1": [5], "acct-2": [3]}


async def test_without_a_registry_no_operator_action_is_taken() -> None:
    signal = operator_signal("acct", "eu", OperatorActionTaken("alice", "clear", None, None, "r"),
                             now=T0, nonce="n")
    assert NoOperators().problem("s", b"", {}, signal) == "no operator registry"
    with pytest.raises(InvalidInput):
        OperatorSigner("nobody-has-this-key")
