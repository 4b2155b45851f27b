"""Which node runs which partitions: leases in a NATS KV bucket, spread by rendezvous hashing.

Every node heartbeats ``node.<id>`` and holds ``part.<p>`` for the partitions it runs. Each tick
it computes, from the live nodes, the partitions that rendezvous hashing gives it; it renews the
leases it holds (a revision-checked update: a lease that expired and was taken cannot be renewed),
releases the partitions another live node should have, and creates the leases of its own that are
free. A dead node's keys expire with the bucket's TTL, so its partitions move within ``ttl``
and a third of a renewal: the nodes are listed that often between renewals, and a node ticks
that often while a partition of its own is still another's. Leases only spread the work:
PostgreSQL's expected version still rejects a stale owner's append.

A node killed outright need not wait out the TTL: every node answers presence asks on the bus
(``LeaseTable.announce``) and asks its peers' at each of those listings. A peer the bus has
known no connection for over ``gone_s`` (a renewal: longer than a reconnect to another server)
is evicted: its keys are deleted, revision-checked, and its partitions taken at the next tick.
A peer that is slow, stalled or behind a paused server still holds the interest, so it is not
gone; one cut off by a network partition is, and takes its partitions back once it returns.

The bucket itself can be out of reach for longer than the TTL: its stream's leader was on a
server that died or stalled, and a raft election takes 4 to 9 s. Every key lapses in it, and
nobody can take one meanwhile. A node does not stop its partitions for that: at the next tick
that reaches the bucket, a lease that lapsed with nobody taking it is taken again (a partition
another node took is stopped then), and the nodes seen before the outage count as live for one
more renewal, so that the first node back does not take every partition only to hand them back
(a failed tick is tried again after a third of a renewal, so every live node is back by then).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import anyio

from safeguards.actors.schema_gate import eligible, encode_table
from safeguards.core.bus import BusUnavailable, Lease, LeaseTable

log = logging.getLogger(__name__)


def owner_of(partition: int, nodes: Sequence[str]) -> str:
    """Rendezvous (highest random weight) hashing: stable when nodes come and go."""
    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{node}/{partition}".encode(), digest_size=8).digest()

    return max(nodes, key=weight)


class PartitionOwnership:
    def __init__(self, *, leases: LeaseTable, node_id: str, partitions: int,
                 ttl_s: float, renew_s: float,
                 start: Callable[[int], Awaitable[None]],
                 stop: Callable[[int], Coroutine[Any, Any, None]],
                 abort: Callable[[int], None],
                 monotonic: Callable[[], float],
                 schemas: Mapping[str, int] | None = None,
                 gone_s: float | None = None) -> None:
        self.leases = leases
        self.node_id = node_id
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._start = start  # begin running a partition whose lease we now hold
        self._stop = stop  # drain a partition gracefully before releasing its lease
        self._abort = abort  # stop at once: the lease is lost, someone else may hold it
        self._monotonic = monotonic
        self.held: dict[int, Lease] = {}
        self._node_lease: Lease | None = None
        self._last_ok = monotonic()
        self._lapsed = False  # no tick reached the bucket for a whole TTL
        self._listed_at = monotonic()
        self._beat_at = monotonic()  # our heartbeat's last renewal
        self._beat_lapsed = False  # it went unrenewed for a TTL since the last listing
        self._list_failed = False  # this tick's listing failed: the membership is stale
        self._grace: tuple[frozenset[str], float] = (frozenset(), 0.0)  # nodes, until
        self.live_nodes: list[str] = []
        # the event schema versions this node reads, announced for the gate (``schema_gate``)
        self.schemas = dict(schemas) if schemas is not None else None
        self._schema_lease: Lease | None = None
        self.gated = False  # a live node writes what this one cannot read: it runs nothing
        self.waiting_for: frozenset[int] = frozenset()  # ours, still held by another
        # A peer the bus has known nobody for (its process has no connection: it died) for
        # ``gone_s`` is evicted: its keys are deleted and its partitions taken at once instead
        # of a TTL later. Past a reconnect to another server (a fraction of a second), and only
        # a peer that answered once (a node of an older release never does).
        self.gone_s = renew_s if gone_s is None else gone_s
        self._seen: set[str] = set()  # peers that answered a presence ask
        self._gone_since: dict[str, float] = {}
        self._announced = False

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self.held)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        started = False
        failed_at: float | None = None
        while True:
            wait = self.renew_s / 3  # after a failure: the bucket's return is seen at once
            try:
                await self.tick()
                self._last_ok = self._monotonic()
                self._lapsed = False
                # For a TTL after the bucket was out of reach, keep ticking at a third of a
                # renewal: a peer that died in the outage has its keys lapse any moment now,
                # and its partitions would otherwise wait up to a whole renewal more for us.
                if self._list_failed:
                    failed_at = self._last_ok
                recent = failed_at is not None and self._last_ok - failed_at < self.ttl_s
                # so, too, while a partition of ours is still another's: a dead node's
                # heartbeat lapses a moment before the leases it renewed after it
                wait = self.renew_s / 3 if recent or self.waiting_for else self.renew_s
            except BusUnavailable as exc:
                failed_at = self._monotonic()
                log.warning("ownership of node %s: %s", self.node_id, exc)
                if self._monotonic() - self._last_ok > self.ttl_s and not self._lapsed:
                    # Our leases lapsed: the next tick that reaches the bucket tells which
                    # are still ours (nobody could take one while nobody reaches it).
                    self._lapsed = True
                    log.warning("node %s could not renew its leases for %.0f s; it keeps its "
                                "%d partitions until the lease bucket answers", self.node_id,
                                self.ttl_s, len(self.held))
            if not started:
                task_status.started()
                started = True
            await self._until_next_tick(wait)

    async def _until_next_tick(self, wait: float) -> None:
        """Sleep ``wait``, listing the nodes every third of a renewal meanwhile: when a live
        node's heartbeat has lapsed (it died), tick at once, so that its partitions are taken
        the moment its leases lapse rather than up to a renewal later."""
        steps = max(1, round(wait / (self.renew_s / 3)))
        for step in range(steps):
            await anyio.sleep(wait / steps)
            if await self._a_peer_left():
                return
            peers = set(self.live_nodes) - {self.node_id}
            if step == steps - 1 or not peers:
                continue
            try:
                listed = await self.leases.holders("node.")
            except BusUnavailable as exc:
                log.warning("ownership of node %s: listing the nodes: %s", self.node_id, exc)
                continue
            if peers - set(listed.values()):
                return

    async def _a_peer_left(self) -> bool:
        """Ask every known peer whether it is still on the bus; True once one has been gone
        for ``gone_s`` (the next tick evicts it)."""
        peers = (set(self.live_nodes) | self._grace[0] | set(self._gone_since)) - {self.node_id}
        gone: dict[str, bool] = {}

        async def ask(peer: str) -> None:
            try:
                gone[peer] = await self.leases.gone(peer)
            except BusUnavailable as exc:
                log.info("ownership of node %s: asking for %s: %s", self.node_id, peer, exc)

        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(ask, peer)
        now = self._monotonic()
        for peer, left in gone.items():
            if not left:
                self._seen.add(peer)
                self._gone_since.pop(peer, None)
            elif peer in self._seen:
                self._gone_since.setdefault(peer, now)
        return any(now - since >= self.gone_s for since in self._gone_since.values())

    async def _evict_the_dead(self, live: list[str]) -> list[str]:
        """``live`` less the peers gone for ``gone_s`` and gone still, whose keys are deleted
        (revision-checked: whatever one renewed since stays; PostgreSQL's expected version
        rejects a stale owner's append either way)."""
        now = self._monotonic()
        dead = set()
        for peer, since in list(self._gone_since.items()):
            if now - since < self.gone_s:
                continue
            if not await self.leases.gone(peer):  # back (reconnected) since the last ask
                self._gone_since.pop(peer)
                continue
            dead.add(peer)
            try:
                freed = await self.leases.evict(peer)
            except BusUnavailable as exc:
                log.warning("node %s: evicting %s: %s", self.node_id, peer, exc)
                continue
            self._gone_since.pop(peer)
            self._seen.discard(peer)
            log.warning("node %s: node %s has had no connection to the bus for %.1f s (it "
                        "died, or its server was cut off): freed %s", self.node_id, peer,
                        now - since,
                        ", ".join(freed) or "none of its keys (already lapsed)")
        if dead:
            before, until = self._grace
            self._grace = (before - dead, until)
        return [n for n in live if n not in dead]

    async def tick(self) -> None:
        await self._heartbeat()
        self._list_failed = False
        try:
            # one listing for the node and schema keys (the partitions' leases are not read)
            keys = await self.leases.holders(("node.", "schema."))
            live = self._membership({v for k, v in keys.items() if k.startswith("node.")})
            live = await self._evict_the_dead(live)
            if self.schemas is not None:
                live = self._gate(live, {k.removeprefix("schema."): v for k, v in keys.items()
                                         if k.startswith("schema.")})
            self.live_nodes = live
            if set(live) - self._seen - {self.node_id}:
                await self._a_peer_left()  # a peer new to us is asked at once (``gone_s``)
        except BusUnavailable as exc:
            # The listing failed where a renewal went through (it is several reads; where
            # the server does not list a stream's subjects, a consumer, so a JetStream meta
            # leader, which an election can leave missing for seconds): renew what we hold on
            # the membership last seen rather than let the leases lapse.
            if not self.live_nodes:
                raise
            self._list_failed = True
            log.warning("ownership of node %s: %s; keeping the last membership", self.node_id,
                        exc)
        desired = {p for p in range(self.partitions) if self.live_nodes
                   and owner_of(p, self.live_nodes) == self.node_id}
        for p, lease in list(self.held.items()):
            renewed = await self.leases.renew(lease)
            if renewed is None:
                # lapsed (the bucket was out of reach for a TTL): ours again if nobody took it
                renewed = await self.leases.acquire(lease.key, self.node_id)
            if renewed is None and await self.leases.holder(lease.key) in (None, self.node_id):
                # Nobody else's: right after a new leader the replicas disagree for a moment
                # (one has purged the lapsed key, the leader not yet, or our last write went
                # through unanswered). Keep running; the next tick takes it or sees the taker.
                continue
            if renewed is None:
                log.warning("node %s lost the lease of partition %d", self.node_id, p)
                del self.held[p]
                self._abort(p)
            else:
                self.held[p] = renewed
        # Hand over what another live node should run: all at once, since each drain waits
        # for its batch in hand and its pull requests, and one after another they could
        # outlast our own leases' TTL before the next renewal.
        handed = {p: self.held.pop(p) for p in sorted(set(self.held) - desired)}
        if handed:
            async with anyio.create_task_group() as tg:
                for p in handed:
                    tg.start_soon(self._stop, p)
            for lease in handed.values():
                await self.leases.release(lease)
        await self._take(sorted(desired - set(self.held)))
        self.waiting_for = frozenset(desired - set(self.held))

    async def _take(self, free: list[int]) -> None:
        """Acquire the leases of ``free`` all at once (a dead peer's partitions come together,
        and one after another the last waited for every other's round trip), then start those
        we got; ``BusUnavailable`` after that when any acquire failed."""
        got: dict[int, Lease | None] = {}
        failed: list[BusUnavailable] = []

        async def acquire(p: int) -> None:
            try:
                got[p] = await self.leases.acquire(f"part.{p}", self.node_id)
            except BusUnavailable as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            for p in free:
                tg.start_soon(acquire, p)
        for p in free:
            lease = got.get(p)
            if lease is not None:
                self.held[p] = lease
                await self._start(p)
        if failed:
            raise failed[0]

    def _membership(self, listed: set[str]) -> list[str]:
        """The live nodes: those listed, this one, and for one renewal after a listing that
        came more than a TTL after the last one, the nodes live before it (their heartbeats
        lapsed in the outage as ours did, and come back at their next tick). Only where ours
        lapsed too: while only the listing failed every live node kept renewing, and one
        missing now is gone; its partitions should not wait a renewal more."""
        now = self._monotonic()
        if now - self._listed_at > self.ttl_s and self._beat_lapsed:
            # one renewal: the peers' first ticks since the bucket came back (a tick that
            # failed is tried again after a third of one); a node that died in the outage
            # waits that much longer to be replaced
            self._grace = (frozenset(self.live_nodes), now + self.renew_s)
        self._listed_at, self._beat_lapsed = now, False
        before, until = self._grace
        return sorted(listed | {self.node_id} | (before if now < until else frozenset()))

    def _gate(self, live: list[str], announced: dict[str, str]) -> list[str]:
        """The live nodes that may run partitions (``schema_gate``); alarms once when this
        node may not."""
        allowed = eligible(live, announced)
        gated = self.node_id not in allowed
        if gated and not self.gated:
            log.error("ALARM node %s cannot read event schemas a live node writes: it hands "
                      "its partitions over and takes none", self.node_id)
        self.gated = gated
        return allowed

    async def _heartbeat(self) -> None:
        if not self._announced:  # before the node key: a peer that lists it finds us
            await self.leases.announce(self.node_id)
            self._announced = True
        if self._node_lease is not None:
            self._node_lease = await self.leases.renew(self._node_lease)
        if self._node_lease is None:
            key = f"node.{self.node_id}"
            self._node_lease = await self.leases.acquire(key, self.node_id)
            if self._node_lease is None:
                raise BusUnavailable(f"node key {key} is held by another process")
        now = self._monotonic()
        self._beat_lapsed = self._beat_lapsed or now - self._beat_at > self.ttl_s
        self._beat_at = now
        if self.schemas is not None:
            if self._schema_lease is not None:
                self._schema_lease = await self.leases.renew(self._schema_lease)
            if self._schema_lease is None:
                self._schema_lease = await self.leases.acquire(f"schema.{self.node_id}",
                                                               encode_table(self.schemas))

    async def shutdown(self) -> None:
        """Drain every partition, then release its lease and the node's heartbeat."""
        reachable = True
        for p in sorted(self.held):
            lease = self.held.pop(p)
            await self._stop(p)
            if reachable:
                try:
                    await self.leases.release(lease)
                except BusUnavailable:
                    reachable = False  # the rest expire with the TTL
        if self._node_lease is not None and reachable:
            with contextlib.suppress(BusUnavailable):
                await self.leases.release(self._node_lease)
        self._node_lease = None
