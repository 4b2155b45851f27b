"""Poison never takes a region down: a signal the store would refuse is refused at decode, and a
request the store still refuses is dead-lettered alone while the rest of its commit cycle (other
accounts, the same partition) commits and the node keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import pytest
from checker import score_signal

from safeguards.actors.clock import ManualClock
from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.memory import MemoryBroker, MemoryBus
from safeguards.adapters.bus.producer_auth import ProducerKeys
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core import codec
from safeguards.core.errors import ConcurrencyConflict, InvalidInput, MalformedEnvelope
from safeguards.core.events import Signal
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.subjects import inputs_subject

from bus_support import wait_until

P = 2
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
HIGH = (("weapons", 0.97),)


def signal(region: str, account: str, n: int) -> Signal:
    return score_signal(region, account, f"{account}-sig-{n}", T0, HIGH)


@pytest.mark.parametrize("field,value", [("k", "c" * 300), ("id", "s" * 201), ("id", ""),
                                         ("k", "ok\x00no")])
def test_ids_the_store_would_refuse_are_poison_at_decode(field: str, value: str) -> None:
    import msgpack

    env = msgpack.unpackb(codec.encode_signal(signal("eu", "acct", 1)), raw=False)
    env[field] = value
    with pytest.raises(MalformedEnvelope) as caught:
        codec.decode_signal(msgpack.packb(env, use_bin_type=True))
    assert value not in str(caught.value) or not value  # never echoed


class RefusingStore(InMemoryEventStore):
    """The region's store with a constraint the decoder does not know about (as a newer schema
    during a rolling deploy could add): it refuses any batch holding ``refused``'s append."""

    def __init__(self, region: str, refused: str) -> None:
        super().__init__(region)
        self.refused = refused
        self.refusals = 0

    async def append_batch(self, requests: Sequence[AppendRequest]
                           ) -> list[AppendResult | ConcurrencyConflict]:
        if any(r.account_id == self.refused for r in requests):
            self.refusals += 1
            raise InvalidInput("the store refuses this account's append")
        return await super().append_batch(requests)


async def test_a_request_the_store_refuses_is_dead_lettered_alone() -> None:
    region = "p" + uuid.uuid4().hex[:8]
    broker = MemoryBroker(region)
    store = RefusingStore(region, "acct-bad")
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.05,
                                                             relay_poll_s=0.05),
                static_partitions=range(P))
    accounts = ["acct-bad", *(f"acct-{i}" for i in range(6))]
    for n in range(2):  # the same cycles carry the bad account's signal and the others'
        for account in accounts:
            broker.publish_input(inputs_subject(region, P, account),
                                 codec.encode_signal(signal(region, account, n)))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 30)
        # the node is still serving: a later signal of a good account commits
        broker.publish_input(inputs_subject(region, P, "acct-0"),
                             codec.encode_signal(signal(region, "acct-0", 9)))
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 30)
        node.request_stop()

    assert store.refusals >= 2
    assert [d.reason for d in broker.dead_letters] == ["store_refused", "store_refused"]
    assert node.metrics.store_refused == 2
    assert await store.history("acct-bad") == []
    for account in accounts[1:]:
        history = await store.history(account)
        assert len({e.causation_id for e in history}) == (3 if account == "acct-0" else 2)


async def test_only_signals_the_regions_parts_produced_are_decided_on() -> None:
    """A score signal forged by anyone who can reach the bus (to get an account suspended) is
    dead-lettered as an alarm; the same signal with the region's producer MAC is decided on."""
    region = "p" + uuid.uuid4().hex[:8]
    keys = ProducerKeys([("p-1", bytes(range(32)))])
    mallory = ProducerKeys([("p-1", bytes(range(1, 33)))])  # the id, not the key
    broker = MemoryBroker(region)
    store = InMemoryEventStore(region)
    node = Node(region=region, partitions=P, bus=MemoryBus(broker), store=store,
                clock=ManualClock(T0), settings=NodeSettings(fetch_timeout_s=0.05,
                                                             relay_poll_s=0.05),
                static_partitions=range(P), producers=keys)
    for n, (account, signer) in enumerate([("acct-a", None), ("acct-a", mallory),
                                           ("acct-b", keys)]):
        subject = inputs_subject(region, P, account)
        data = codec.encode_signal(signal(region, account, n))
        broker.publish_input(subject, data, signer.headers(subject, data) if signer else None)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await wait_until(lambda: not any(broker.pending(p) for p in range(P)), 30)
        node.request_stop()
    assert [d.reason for d in broker.dead_letters] == ["producer_unverified"] * 2
    assert await store.history("acct-a") == []
    assert len(await store.history("acct-b")) >= 1
