"""The fleet-wide schema gate: while a node that writes newer event schemas is live, an older
node runs no partition (it hands its own over); once the newer one is gone, it takes part
again. Real nodes on a real NATS, sharing one lease bucket."""

from __future__ import annotations

import uuid

import anyio

from safeguards.actors.node import Node
from safeguards.actors.schema_gate import eligible, encode_table, own_schemas, reads_all
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.store import InMemoryEventStore

from bus_support import wait_until

P = 4


def test_a_node_reads_all_only_with_every_type_at_least_as_new() -> None:
    mine = own_schemas()
    newer = {**mine, "RequestObserved": mine["RequestObserved"] + 1}
    assert reads_all(mine, [mine]) and reads_all(newer, [mine, newer])
    assert not reads_all(mine, [newer])
    assert not reads_all(mine, [{"SomeFutureEvent": 1}])  # a type it does not know at all
    announced = {"old": encode_table(mine), "new": encode_table(newer), "junk": "{not json"}
    assert eligible(["old", "new", "legacy", "junk"], announced) == ["new", "legacy", "junk"]


async def test_an_older_node_hands_over_while_a_newer_one_is_live(nats_url: str) -> None:
    region = "g" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    settings = NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2, lease_ttl_s=2.0,
                            lease_renew_s=0.3)
    mine = own_schemas()
    newer = {**mine, "ScoreRecorded": mine["ScoreRecorded"] + 1}

    def node(node_id: str, schemas: dict[str, int]) -> Node:
        return Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                    node_id=node_id, settings=settings, schemas=schemas)

    old, new = node("old", mine), node("new", newer)
    async with anyio.create_task_group() as tg:
        await tg.start(old.run)
        await wait_until(lambda: len(old.owned) == P, timeout_s=15)
        await tg.start(new.run)
        await wait_until(lambda: len(new.owned) == P and not old.owned, timeout_s=15)
        assert old.ownership is not None and old.ownership.gated
        new.request_stop()  # the newer node leaves: the older one may read what is left
        await wait_until(lambda: len(old.owned) == P, timeout_s=15)
        assert not old.ownership.gated
        old.request_stop()
