"""The lease bucket out of reach for longer than the TTL (its leader's server died or stalled
and the election took 4 to 9 s): every lease lapses in it, nobody could take one meanwhile, and
the nodes keep their partitions instead of stopping them all and trading them back and forth.
A node that really died in the outage is still replaced once its keys lapse, and one whose
process the bus knows no connection of for a renewal (it died) is evicted without waiting for
them."""

from __future__ import annotations

from typing import TypeVar

from safeguards.actors.ownership import PartitionOwnership, owner_of
from safeguards.adapters.bus.memory import MemoryBroker, MemoryLeases
from safeguards.core.bus import BusUnavailable

P = 8
TTL = 6.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _node(node_id: str, broker: MemoryBroker, clock: Clock,
          events: list[tuple[str, str, int]]) -> PartitionOwnership:
    async def start(p: int) -> None:
        events.append(("start", node_id, p))

    async def stop(p: int) -> None:
        events.append(("stop", node_id, p))

    return PartitionOwnership(
        leases=MemoryLeases(broker, TTL), node_id=node_id, partitions=P, ttl_s=TTL,
        renew_s=1.5, start=start, stop=stop,
        abort=lambda p: events.append(("abort", node_id, p)), monotonic=clock)


def _theirs(node: str) -> frozenset[int]:
    return frozenset(p for p in range(P) if owner_of(p, ["a", "b"]) == node)


async def test_an_outage_longer_than_the_ttl_moves_and_stops_nothing() -> None:
    clock = Clock()
    broker = MemoryBroker("outage", monotonic=clock)
    events: list[tuple[str, str, int]] = []
    a, b = _node("a", broker, clock, events), _node("b", broker, clock, events)
    for _ in range(2):  # the second round: each sees the other and hands its share over
        await a.tick()
        await b.tick()
        await a.tick()
    assert (a.owned, b.owned) == (_theirs("a"), _theirs("b"))
    events.clear()

    broker.available = False
    clock.now += TTL + 3.0  # every key lapses in the bucket
    broker.available = True
    await a.tick()  # first back: b's heartbeat has lapsed too, yet b is not taken for dead
    await b.tick()
    await a.tick()
    assert (a.owned, b.owned) == (_theirs("a"), _theirs("b"))
    assert events == []  # nothing stopped, aborted or started again

    for _ in range(5):  # b died right after the outage: a ticks on, b's keys lapse
        clock.now += 1.5
        await a.tick()
    assert a.owned == frozenset(range(P))
    assert sorted(p for kind, _, p in events if kind == "start") == sorted(_theirs("b"))


class _ListingDown(MemoryLeases):
    """The bucket takes writes but cannot be listed (a listing is several reads; where the
    server lists no subjects, a consumer, so a JetStream meta leader, which an election can
    leave missing while the stream has one)."""

    listing_down = False

    async def holders(self, prefix: str | tuple[str, ...]) -> dict[str, str]:
        if self.listing_down:
            raise BusUnavailable("list: ServiceUnavailableError")
        return await super().holders(prefix)


_L = TypeVar("_L", bound=MemoryLeases)


async def _settled_pair(name: str, leases_type: type[_L]
                        ) -> tuple[Clock, PartitionOwnership, PartitionOwnership, _L]:
    """Nodes a and b sharing one broker, a's leases of ``leases_type``, each holding its own."""
    clock = Clock()
    broker = MemoryBroker(name, monotonic=clock)
    events: list[tuple[str, str, int]] = []
    a, b = _node("a", broker, clock, events), _node("b", broker, clock, events)
    leases = leases_type(broker, TTL)
    a.leases = leases
    for _ in range(2):
        await a.tick()
        await b.tick()
        await a.tick()
    return clock, a, b, leases


async def test_a_peer_gone_while_only_the_listing_failed_is_replaced_at_once() -> None:
    clock, a, b, leases = await _settled_pair("listing", _ListingDown)
    assert (a.owned, b.owned) == (_theirs("a"), _theirs("b"))

    leases.listing_down = True  # b dies; a keeps renewing on the membership it last saw
    for _ in range(5):
        clock.now += 1.5
        await a.tick()
    assert a.owned == _theirs("a")
    leases.listing_down = False
    await a.tick()  # b's heartbeat lapsed while a's never did: b is gone, no grace for it
    assert a.owned == frozenset(range(P))


class _Counting(MemoryLeases):
    listings = 0

    async def holders(self, prefix: str | tuple[str, ...]) -> dict[str, str]:
        self.listings += 1
        return await super().holders(prefix)


async def test_a_dead_peer_is_noticed_between_renewals_and_its_leases_taken_as_they_lapse(
) -> None:
    _clock, a, b, leases = await _settled_pair("between", _Counting)
    assert (a.owned, b.owned) == (_theirs("a"), _theirs("b")) and not a.waiting_for
    a.renew_s = 0.03  # real sleeps, kept short

    leases.listings = 0
    await a._until_next_tick(a.renew_s)  # b alive: the whole renewal, listed twice meanwhile
    assert leases.listings == 2

    # b dies: its heartbeat lapses a moment before the partition leases it renewed after it
    assert b._node_lease is not None
    await b.leases.release(b._node_lease)
    leases.listings = 0
    await a._until_next_tick(a.renew_s)  # noticed at the first listing: a ticks at once
    assert leases.listings == 1
    last, *rest = sorted(b.held.items(), reverse=True)
    for _, lease in rest:
        await b.leases.release(lease)
    await a.tick()
    assert a.waiting_for == {last[0]}  # a ticks again in a third of a renewal, not a whole one
    await b.leases.release(last[1])
    await a.tick()
    assert a.owned == frozenset(range(P)) and not a.waiting_for


async def test_a_peer_that_left_the_bus_is_evicted_well_before_its_keys_lapse() -> None:
    clock, a, _b, leases = await _settled_pair("left", MemoryLeases)
    broker = leases.broker
    assert not await a._a_peer_left()  # b answers: seen
    broker.present.discard("b")  # b's process dies: its connection is gone
    assert not await a._a_peer_left()
    clock.now += 1.0  # a reconnect to another server takes less: not gone yet
    assert not await a._a_peer_left()
    clock.now += 0.6
    assert await a._a_peer_left()  # a ticks at once
    await a.tick()
    assert a.owned == frozenset(range(P)) and not a.waiting_for  # 1.6 s after, not a TTL
    assert "node.b" not in broker.leases and a.live_nodes == ["a"]


async def test_a_peer_back_on_the_bus_or_never_seen_on_it_is_not_evicted() -> None:
    clock, a, b, leases = await _settled_pair("back", MemoryLeases)
    broker = leases.broker
    assert not await a._a_peer_left()
    broker.present.discard("b")  # a reconnect, or a node cut off by a network partition
    assert not await a._a_peer_left()
    clock.now += 2.0
    assert await a._a_peer_left()
    broker.present.add("b")  # back before a's tick: asked again there, it answers
    await a.tick()
    assert (a.owned, b.owned) == (_theirs("a"), _theirs("b"))
    assert a.live_nodes == ["a", "b"]

    # a node of an older release never answers: it keeps its keys until they lapse
    broker.present.discard("b")
    a._seen.clear()
    for _ in range(3):
        clock.now += 1.0
        assert not await a._a_peer_left()
    await a.tick()
    assert a.owned == _theirs("a") and a.live_nodes == ["a", "b"]
