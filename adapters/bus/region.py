"""The bus port (``core.bus``) on NATS JetStream: what an actor node connects to.

``NatsBus(url).connect(name)`` opens one connection (``connect.connect``) and yields a
``NatsRegionBus``: the region's partition consumers, dead letters, lease bucket, enforcement
stream, forwarded signals and policy board over it. The connection is drained on the way out.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError, NotFoundError

from safeguards.adapters import tracing
from safeguards.adapters.bus.cluster_watch import quorum_write, watch_jetstream
from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.consumers import ConsumerSettings, PartitionConsumer
from safeguards.adapters.bus.dlq import DeadLetters
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import LeaseBucket, lease_bucket_name
from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
from safeguards.adapters.bus.policy_board import PolicyBoard, run_policy
from safeguards.adapters.bus.producer_auth import ProducerKeys, load_producer_keys
from safeguards.adapters.bus.signing import CommandSigner, CommandVerifier, load_signer
from safeguards.adapters.bus.streams import StreamSettings, cluster_replicas, provision_region
from safeguards.core.bus import LeaseTable
from safeguards.core.ids import validate_region
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore, OutboxMessage
from safeguards.core.subjects import stream_name

PUBLISH_TIMEOUT_S = 2.0
log = logging.getLogger(__name__)
WRONG_LAST_SEQUENCE = 10071  # Nats-Expected-Last-Subject-Sequence did not hold
_TRANSPORT = (TimeoutError, nats.errors.Error)


@dataclass(frozen=True, slots=True)
class NatsBus:
    """The bus connector of one region on the NATS server(s) at ``url``."""

    url: str
    region: str
    streams: StreamSettings = field(default_factory=StreamSettings)
    consumers: ConsumerSettings = field(default_factory=ConsumerSettings)
    signer: CommandSigner | None = None  # the region's enforcement key (default: load_signer)
    # the region's producer keys, for forwarded signals (default: load_producer_keys)
    producer: ProducerKeys | None = None

    @contextlib.asynccontextmanager
    async def connect(self, name: str) -> AsyncIterator[NatsRegionBus]:
        signer = self.signer or load_signer(self.region)
        producer = self.producer or load_producer_keys(self.region)
        nc = await connect(self.url, name=name,
                           identity=nats_identity(self.region, NatsRole.NODE))
        try:
            async with anyio.create_task_group() as tg:
                if cluster_replicas(nc.jetstream()) > 1:
                    # a server cut off from its cluster still answers pings: leave it
                    probe = quorum_write(nc, lease_bucket_name(self.region), name)
                    tg.start_soon(functools.partial(watch_jetstream, nc, name=name,
                                                    probe=probe))
                yield NatsRegionBus(nc, self.region, self.streams, self.consumers, signer,
                                    producer)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                try:
                    await nc.drain()
                except nats.errors.Error:
                    # Not connected (the server is gone or we are reconnecting): nothing to
                    # flush; whatever was not acked is redelivered and deduplicated.
                    await nc.close()


class JetStreamCommands:
    """The region's enforcement stream (``core.bus.CommandStream``): every command goes out
    signed with the region's enforcement key (``signing``), which is what gates check; a last
    command not signed by ``trusted`` (default: this key) reads as forged."""

    def __init__(self, nc: Client, region: str, signer: CommandSigner,
                 trusted: CommandVerifier | None = None) -> None:
        self._js = nc.jetstream(timeout=5.0)
        self._stream = stream_name(region, "ENFORCE")
        self._signer = signer
        self._trusted = trusted or CommandVerifier([signer.public])

    async def publish(self, message: OutboxMessage) -> None:
        await self._publish(message, {"Nats-Msg-Id": message.message_id})

    async def _publish(self, message: OutboxMessage, headers: dict[str, str]) -> None:
        headers.update(self._signer.headers(message.subject, message.payload))
        tracing.inject_current(headers)  # the relay's span, for the gate's apply (tracing on)
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                await self._js.publish(message.subject, message.payload,
                                       timeout=PUBLISH_TIMEOUT_S, stream=self._stream,
                                       headers=headers)
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise  # publish_after's answer: the subject moved on
            # A cluster electing a leader answers 503, "duplicate message id is in process"
            # (our own retry of a publish still being replicated) or the like: the row stays
            # pending and goes out again, deduplicated by its id.
            raise BusUnavailable(f"command publish: {type(exc).__name__} "
                                 f"{exc.err_code or exc.code}") from None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"command publish: {type(exc).__name__}") from None

    async def last(self, subject: str) -> tuple[int, bytes | None] | None:
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                msg = await self._js.get_last_msg(self._stream, subject)
        except NotFoundError:
            return None
        except (*_TRANSPORT, APIError) as exc:
            raise BusUnavailable(f"reading the last command: {type(exc).__name__}") from None
        data = msg.data or b""
        why = self._trusted.problem(subject, data, msg.headers)
        if why is not None:
            log.warning("enforcement stream: the last command on a subject is %s (seq %s): "
                        "the gates refuse it", why, msg.seq)
            return msg.seq or 0, None
        return msg.seq or 0, data

    async def publish_after(self, message: OutboxMessage, last_sequence: int) -> bool:
        try:
            # Its own message id: the command's id may still sit in the duplicate window (the
            # broker lost the message, not its memory of the id) and the repair would be
            # "accepted" and dropped. The expected sequence is what keeps two repairs apart.
            await self._publish(message, {"Nats-Msg-Id": f"{message.message_id}.repair."
                                                         f"{last_sequence}",
                                          "Nats-Expected-Last-Subject-Sequence":
                                              str(last_sequence)})
        except APIError:
            return False  # the subject's last command changed since it was read
        return True


class JetStreamSignals:
    """Signals an actor forwards to another entity's actor (``core.bus.SignalPublisher``): to the
    region's inputs stream, deduplicated by message id, with the region's producer MAC that every
    node checks before deciding (``producer_auth``), as the gates' and classifier's carry."""

    def __init__(self, nc: Client, region: str, producer: ProducerKeys) -> None:
        self._js = nc.jetstream(timeout=5.0)
        self._stream = stream_name(region, "INPUTS")
        self._producer = producer

    async def publish(self, message: OutboxMessage) -> None:
        headers = {"Nats-Msg-Id": message.message_id,
                   **self._producer.headers(message.subject, message.payload)}
        tracing.inject_current(headers)
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                await self._js.publish(message.subject, message.payload,
                                       timeout=PUBLISH_TIMEOUT_S, stream=self._stream,
                                       headers=headers)
        except (*_TRANSPORT, APIError) as exc:
            # A refusal (a full inputs stream) is retried like an outage: the row stays pending.
            raise BusUnavailable(f"signal publish: {type(exc).__name__}") from None


class NatsRegionBus:
    def __init__(self, nc: Client, region: str, streams: StreamSettings,
                 consumers: ConsumerSettings, signer: CommandSigner,
                 producer: ProducerKeys) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)
        self.region = validate_region(region)
        self._streams = streams
        self._consumers = consumers
        self.dead_letters = DeadLetters(self._js, self.region)
        self.commands = JetStreamCommands(nc, self.region, signer)
        self.signals = JetStreamSignals(nc, self.region, producer)
        self._provisioned: set[str] = set()  # durables this connection made sure of

    @property
    def ack_wait_s(self) -> float:
        return self._consumers.backoff[0]

    @property
    def max_deliveries(self) -> int:
        return self._consumers.max_deliver

    def reconnects(self) -> int:
        return int(self._nc.stats["reconnects"])

    async def provision(self) -> None:
        await provision_region(self._js, self.region, self._streams)

    def signal_source(self, partition: int) -> PartitionConsumer:
        return PartitionConsumer(self._nc, self.region, partition, self._consumers,
                                 provisioned=self._provisioned)

    async def lease_table(self, ttl_s: float) -> LeaseTable:
        return await LeaseBucket.open(self._js, self.region, ttl_s, nc=self._nc)

    async def run_policy(self, store: EventStore, apply: Callable[[Policy], None]) -> None:
        board: PolicyBoard | None = None

        async def opened() -> PolicyBoard:
            """The board, opened on first use (BusUnavailable while NATS cannot open it)."""
            nonlocal board
            if board is None:
                board = await PolicyBoard.open(self._js, self.region)
            return board

        await run_policy(store, self.region, opened, apply)
