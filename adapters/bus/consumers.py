"""Durable pull consumers, one per input partition, and fetching from them with a deadline."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from safeguards.adapters.bus.direct_reads import DirectRead, read_direct
from safeguards.adapters.bus.errors import BusUnavailable, ProvisioningConflict
from safeguards.adapters.bus.inbound import JetStreamMessage
from safeguards.adapters.bus.jetstream_retry import is_transient
from safeguards.core.subjects import partition_filter, stream_name

API_TIMEOUT_S = 5.0
OPEN_TRY_S = 0.5  # a partition's open makes sure of its consumer in a try this long (then pulls)
ENSURE_AGAIN_S = 5.0  # a create unanswered at open is tried again this often until one answers
# how long a consumer goes unserved (no leader) before its partition reads the stream directly:
# past a leadership hand-over, short of nats-server's 4-9 s election after a server died
DIRECT_AFTER_S = 1.0
# pull requests in a row that got no answer at all, not even an expiry (the consumer's leader is
# on a server that is paused or cut off, whose interest its routes still hold, so nobody says
# "no responders") before its partition reads the stream directly: each waited its expiry and
# grace period, already past ``DIRECT_AFTER_S``
DIRECT_AFTER_UNANSWERED = 1
DIRECT_TIMEOUT_S = 0.5

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Redelivery and flow limits of a partition consumer.

    ``backoff`` is the wait before each redelivery of an unacknowledged message (its first entry
    is the ack wait); the actors keep slow batches alive with ``in_progress``. A message that has
    been delivered ``max_deliver`` times is never delivered again, so the actors dead-letter it
    themselves on its last delivery.
    """

    max_ack_pending: int = 2048
    max_deliver: int = 20
    backoff: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 60.0)
    max_waiting: int = 64
    durable_prefix: str = "actors"


def durable_name(region: str, partition: int, settings: ConsumerSettings) -> str:
    return f"{settings.durable_prefix}-{region}-p{partition}"


def partition_consumer_config(region: str, partition: int,
                              s: ConsumerSettings) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=durable_name(region, partition, s),
        description=f"account actors of region {region}, partition {partition}",
        filter_subject=partition_filter(region, partition),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=s.backoff[0],
        backoff=list(s.backoff),
        max_deliver=s.max_deliver,
        max_ack_pending=s.max_ack_pending,
        max_waiting=s.max_waiting,
        replay_policy=api.ReplayPolicy.INSTANT,
    )


async def ensure_partition_consumer(js: JetStreamContext, region: str, partition: int,
                                    settings: ConsumerSettings | None = None, *,
                                    timeout_s: float = API_TIMEOUT_S) -> str:
    """Create (or converge) the durable consumer of one partition; returns its name.
    ``BusUnavailable`` when no answer came within ``timeout_s``, or one a retry can help (no
    JetStream meta leader: "temporarily unavailable", as right after a network partition
    heals, when a dead node's partitions are taken over)."""
    s = settings or ConsumerSettings()
    config = partition_consumer_config(region, partition, s)
    stream = stream_name(region, "INPUTS")
    try:
        with anyio.fail_after(timeout_s):
            try:
                await js.add_consumer(stream, config, timeout=timeout_s)
            except APIError as exc:
                if is_transient(exc):
                    raise
                # An existing durable with other settings: adopt it when the filter matches, since
                # its delivery state (what is acked) is worth more than our preferred limits.
                info = await js.consumer_info(stream, config.durable_name or "",
                                              timeout=timeout_s)
                if info.config.filter_subject != config.filter_subject:
                    raise ProvisioningConflict(
                        f"consumer {config.durable_name} filters {info.config.filter_subject}: "
                        f"{exc.description}"
                    ) from None
    except TimeoutError:
        raise BusUnavailable(f"creating consumer {config.durable_name}: no answer") from None
    except (APIError, nats.errors.Error) as exc:
        if not is_transient(exc):
            raise
        raise BusUnavailable(f"creating consumer {config.durable_name}: "
                             f"{type(exc).__name__}") from None
    assert config.durable_name is not None
    return config.durable_name


class PartitionConsumer:  # the bus port's SignalSource on JetStream
    """Takes batches from one partition's durable consumer through a standing pull.

    Messages flow into a local buffer as JetStream delivers them, while the worker is busy with
    the previous batch, so a signal that arrives mid-batch is in hand the moment the worker asks:
    no fetch round trips on the latency path. Flow control is by credit: pull requests
    (expiring after ``expires_s``) are kept outstanding so that credit plus buffer stays within
    one batch (topped up when it falls to half); JetStream's own ``max_ack_pending`` bounds the
    rest. Buffered messages are kept alive (``in_progress``) when they wait longer than a third
    of the ack wait, so a slow worker is never overtaken by redeliveries of its own messages. A
    request that ends (filled, or a 408/409 status when it expires or the server refuses it)
    is replaced at once; one that neither delivers nor ends within its expiry plus a grace
    period (the server restarted and forgot it) is written off and replaced, so a restart of
    NATS heals by itself; so is every request outstanding when the connection moves to another
    server. On ``close`` no new requests go out, the outstanding ones are let run
    out, and whatever is buffered but was never handed out is given back (``nak``) so that the
    partition's next owner gets it at once instead of after the ack wait.

    ``provisioned``: the durables already made sure of through this connection (shared by its
    consumers); opening one of them again (the partition's lease was lost and taken back) only
    subscribes. Making sure goes through the consumer's leader, which a server's pause or
    partition can leave missing for seconds, and a pull request is served the moment a new one
    is elected, where a create waits out its whole API timeout.

    A consumer whose leader's server died answers pull requests "no responders" until its
    group elects another (nats-server waits 4-9 s): past ``DIRECT_AFTER_S`` of that, ``fetch``
    reads what follows the last delivery straight from the stream's replicas (``direct_reads``;
    the consumer delivers it again later, and the inbox knows it). So does one whose leader's
    server is paused or partitioned away, which leaves pull requests unanswered instead:
    after ``DIRECT_AFTER_UNANSWERED`` of them written off in a row.
    """

    def __init__(self, nc: Client, region: str, partition: int,
                 settings: ConsumerSettings | None = None, *,
                 expires_s: float = 0.5, grace_s: float = 1.0,
                 provisioned: set[str] | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=API_TIMEOUT_S)
        self.region = region
        self.partition = partition
        self.settings = settings or ConsumerSettings()
        self.expires_s = expires_s
        self.grace_s = grace_s
        self._sub: Subscription | None = None
        self._next_subject = ""
        self._inbox = ""
        self._buffer: deque[JetStreamMessage] = deque()
        self._arrived = anyio.Event()
        # outstanding pull requests, oldest first: [credit left, monotonic deadline]
        self._requests: deque[list[float]] = deque()
        self._batch = 1
        self._closing = False
        self._interrupted = False
        self._kept_alive = time.monotonic()
        self._provisioned = provisioned if provisioned is not None else set()
        self._reconnects = int(nc.stats["reconnects"])
        # the consumer's leader is gone (pull requests answered "no responders") since then;
        # the last message it delivered, and where reading the stream directly goes on from
        self._leaderless_since: float | None = None
        self._last_delivered: JetStreamMessage | None = None
        self._direct_next = 0
        self._unanswered = 0  # pull requests written off in a row with no answer at all
        self.direct_reads = 0  # messages read directly while the consumer had no leader
        self._unsure_at: float | None = None  # its create went unanswered (``open``) then
        self._served = False  # the consumer answered a pull request (not "no responders")
        self._tried_served = False  # and was made sure of since (or tried)

    @property
    def credit(self) -> int:
        return int(sum(r[0] for r in self._requests))

    async def open(self) -> None:
        name = durable_name(self.region, self.partition, self.settings)
        if name not in self._provisioned:
            try:
                await self._make_sure(name)
            except BusUnavailable as exc:
                # Its create waits on the consumer's leader (a short try: the durable usually
                # exists), and the next try would wait out another one after an election,
                # where a pull request is served the moment a leader is elected: pull now,
                # make sure of the consumer once it answers (``fetch``).
                log.warning("partition %d: %s; pulling meanwhile", self.partition, exc)
                self._unsure_at = time.monotonic()
        stream = stream_name(self.region, "INPUTS")
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
        self._inbox = self._nc.new_inbox()
        try:
            with anyio.fail_after(API_TIMEOUT_S):
                self._sub = await self._nc.subscribe(
                    self._inbox, cb=self._on_message,
                    pending_msgs_limit=4 * self.settings.max_ack_pending)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailable(f"subscribing for partition {self.partition}: "
                                 f"{type(exc).__name__}") from None

    async def _make_sure(self, name: str) -> None:
        await ensure_partition_consumer(self._js, self.region, self.partition, self.settings,
                                        timeout_s=OPEN_TRY_S)
        self._provisioned.add(name)
        self._unsure_at = None

    async def fetch(self, batch: int, timeout_s: float) -> list[JetStreamMessage | DirectRead]:
        """Up to ``batch`` messages: those already delivered at once, else the first to arrive
        within ``timeout_s`` (an empty list when none did). While the consumer has had no
        leader for ``DIRECT_AFTER_S``, what follows its last delivery is read from the stream
        directly (``direct_reads``). A consumer whose create went unanswered at ``open`` is
        made sure of once it answers a pull, and every ``ENSURE_AGAIN_S`` until that went
        through (it may not exist yet)."""
        if self._sub is None:
            raise RuntimeError("PartitionConsumer.fetch before open")
        unsure = self._unsure_at
        if unsure is not None and ((self._served and not self._tried_served)
                                   or time.monotonic() - unsure >= ENSURE_AGAIN_S):
            self._tried_served = self._served  # once at once; then every ENSURE_AGAIN_S
            try:
                await self._make_sure(durable_name(self.region, self.partition, self.settings))
            except BusUnavailable as exc:
                self._unsure_at = time.monotonic()
                log.warning("partition %d: %s", self.partition, exc)
        self._batch = batch
        await self._top_up()
        if not self._buffer and self._unserved():
            direct = await self._read_direct(batch)
            if direct:
                return list(direct)
        if not self._buffer and not self._interrupted:
            with anyio.move_on_after(timeout_s):
                while not self._buffer and not self._interrupted:
                    await self._arrived.wait()
                    if not self._buffer:
                        self._arrived = anyio.Event()
        out: list[JetStreamMessage | DirectRead] = [
            self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]
        if not self._buffer:
            self._arrived = anyio.Event()
        elif time.monotonic() - self._kept_alive > self.settings.backoff[0] / 3:
            await self.keep_alive()
        await self._top_up()
        return out

    def _unserved(self) -> bool:
        """The consumer serves no pull request: it has had no leader for ``DIRECT_AFTER_S``,
        or ``DIRECT_AFTER_UNANSWERED`` requests in a row went unanswered."""
        since = self._leaderless_since
        if self._interrupted:
            return False
        return (self._unanswered >= DIRECT_AFTER_UNANSWERED
                or (since is not None and time.monotonic() - since >= DIRECT_AFTER_S))

    async def _read_direct(self, batch: int) -> list[DirectRead]:
        """The partition's next messages after the consumer's last delivery (or after the last
        ones read this way), from any replica of the stream; none when nothing was delivered
        yet through this consumer (where it stands is unknown) or no replica answered."""
        last = self._last_delivered
        if last is None:
            return []
        if self._direct_next == 0:
            log.warning("partition %d: its consumer does not serve pull requests (no leader, or "
                        "its server paused or cut off); reading the stream directly meanwhile",
                        self.partition)
        start = max(self._direct_next, last.sequence + 1)
        stream = stream_name(self.region, "INPUTS")
        try:
            msgs = await read_direct(self._nc, stream, partition_filter(self.region,
                                                                        self.partition),
                                     start, batch, DIRECT_TIMEOUT_S)
        except BusUnavailable as exc:
            log.info("partition %d: %s", self.partition, exc)
            return []
        if msgs:
            self._direct_next = msgs[-1].sequence + 1
            self.direct_reads += len(msgs)
        else:
            self._direct_next = start
        return msgs

    async def _top_up(self) -> None:
        """Write off requests past their deadline, then request enough to bring credit plus
        buffer back to one batch once they fall to half of one."""
        if self._closing or self._sub is None:
            return
        now = time.monotonic()
        moved = int(self._nc.stats["reconnects"])
        if moved != self._reconnects:
            # The connection moved to another server (or back): requests sent through the old
            # one may have died with it; their grace period would hold the partition up.
            self._reconnects = moved
            self._requests.clear()
        if self._requests and self._requests[0][1] < now:
            lost = 0
            while self._requests and self._requests[0][1] < now:
                self._requests.popleft()
                lost += 1
            self._unanswered += lost
            log.warning("partition %d: %d pull request(s) neither filled nor expired (the "
                        "server restarted?); requesting again", self.partition, lost)
        have = self.credit + len(self._buffer)
        if have > self._batch // 2:
            return
        want = self._batch - have
        self._requests.append([want, now + self.expires_s + self.grace_s])
        request = json.dumps({"batch": want,
                              "expires": int(self.expires_s * 1_000_000_000)}).encode()
        try:
            await self._nc.publish(self._next_subject, request, reply=self._inbox)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.ConnectionDrainingError, nats.errors.OutboundBufferLimitError
                ) as exc:
            self._requests.pop()
            raise BusUnavailable(f"pull from partition {self.partition}: "
                                 f"{type(exc).__name__}") from None

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(api.Header.STATUS) if msg.headers else None
        if status == api.StatusCode.SERVICE_UNAVAILABLE:
            # "No responders": the consumer has no leader. The next fetch asks again; asking
            # from here answered each 503 with another request, a thousand a second per
            # partition through the cluster during the whole election.
            if self._requests:
                self._requests.popleft()
            if self._leaderless_since is None:
                self._leaderless_since = time.monotonic()
            if self._closing and not self._requests:
                self._arrived.set()
            return
        self._served = True
        if self._leaderless_since is not None or self._unanswered:
            # the consumer answers again
            self._leaderless_since, self._unanswered, self._direct_next = None, 0, 0
        if status is None:
            if self._requests:
                self._requests[0][0] -= 1
                if self._requests[0][0] <= 0:
                    self._requests.popleft()
            self._last_delivered = JetStreamMessage(msg)
            self._buffer.append(self._last_delivered)
            self._arrived.set()
        elif status == api.StatusCode.CONTROL_MESSAGE:
            return  # a heartbeat
        else:
            # 404/408: the oldest request ended unfilled (expired); 409: refused or cut short
            # (max waiting, leadership change, consumer deleted). Either way it is over.
            if self._requests:
                self._requests.popleft()
        if not self._closing and self.credit + len(self._buffer) <= self._batch // 2:
            with contextlib.suppress(BusUnavailable):
                await self._top_up()
        if self._closing and not self._requests:
            self._arrived.set()

    def interrupt(self) -> None:
        """Make a waiting ``fetch`` (and every later one) return at once: the worker is
        stopping and should not sit out the wait."""
        self._interrupted = True
        self._arrived.set()

    async def keep_alive(self) -> None:
        """Tell JetStream the buffered messages are still ours (the worker is slow, held up by
        a store outage or a full mailbox), so they are not redelivered meanwhile."""
        self._kept_alive = time.monotonic()
        for msg in list(self._buffer):
            await msg.in_progress()  # BusUnavailable: the caller's to count

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._closing = True
        if sub is None:
            return
        # Let the outstanding requests run out (at most their expiry), so nothing is delivered
        # to an inbox nobody reads; then give back what was never handed out.
        with anyio.move_on_after(self.expires_s + 0.2):
            while self._requests:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        with anyio.move_on_after(2.0):
            with contextlib.suppress(BusUnavailable):
                while self._buffer:
                    await self._buffer.popleft().nak()
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
