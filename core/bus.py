"""The bus port: what the actors need from the message bus, as Protocols.

A region's inputs arrive on partitioned durable streams and are *settled* one message at a time
(ack once its effect is committed; nak to have it again later; term to drop it for good, after
dead-lettering it; in-progress to keep it while a slow turn holds it). Partitions are owned
through leases that expire unless renewed. Poison goes to dead letters with its reason.

``adapters.bus`` implements these on NATS JetStream; ``adapters.bus.memory`` is the in-memory
twin for tests and simulations. One contract suite (``tests/actors/test_bus_contract.py``)
runs against both. Async methods are plain ``async def`` signatures: the core imports no event
loop library.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from safeguards.core.errors import SafeguardsError
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore, OutboxMessage


class BusUnavailable(SafeguardsError):
    """The bus could not be reached or did not answer before the deadline; nothing was
    confirmed (the caller keeps what it holds and tries again)."""

    retryable = True


class DeadLetterReason(enum.StrEnum):
    UNDECODABLE = "undecodable"  # not a signal we can read (bad msgpack, unknown type, ...)
    REGION_MISMATCH = "region_mismatch"  # a signal of another region on this region's bus
    SUBJECT_MISMATCH = "subject_mismatch"  # the subject does not belong to the signal's account
    REJECTED = "rejected"  # decoded, but the account's history refused it on every retry
    DECIDE_FAILED = "decide_failed"  # deciding on it raised a coding error on every retry
    STORE_REFUSED = "store_refused"  # the store refused its append as malformed (never retried)
    OPERATOR_UNVERIFIED = "operator_unverified"  # an operator action no registered operator
    # with that role signed (unsigned, unknown operator, bad signature, another's name, role)
    PRODUCER_UNVERIFIED = "producer_unverified"  # not made by the region's gates or classifier
    QUARANTINED = "quarantined"  # its account's stored history cannot be read by this node


class InboundMessage(Protocol):
    """One delivery of a message from a durable stream."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str]:
        """Its message headers (empty when it has none)."""
        ...

    @property
    def deliveries(self) -> int:
        """How many times it was delivered, this delivery included (1 the first time)."""
        ...

    @property
    def stream(self) -> str: ...

    @property
    def sequence(self) -> int:
        """Its position in its stream (the same on every redelivery)."""
        ...

    async def ack(self) -> None:
        """Done with: never delivered again."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Deliver it again, after ``delay`` seconds (None: the consumer's own backoff)."""
        ...

    async def term(self) -> None:
        """Never deliver it again, though it was not processed (it was dead-lettered)."""
        ...

    async def in_progress(self) -> None:
        """Still being worked on: restart its ack wait."""
        ...


class SignalSource(Protocol):
    """One partition's durable consumer, taken in batches."""

    async def open(self) -> None: ...

    async def fetch(self, batch: int, timeout_s: float) -> Sequence[InboundMessage]:
        """Up to ``batch`` messages: those in hand at once, else the first to arrive within
        ``timeout_s`` (empty when none did)."""
        ...

    def interrupt(self) -> None:
        """Make a waiting ``fetch`` (and every later one) return at once."""
        ...

    async def keep_alive(self) -> None:
        """``in_progress`` for every message taken from the bus but not yet handed out."""
        ...

    async def close(self) -> None:
        """Stop taking messages; give back (nak) what was never handed out."""
        ...


class DeadLetterSink(Protocol):
    async def send(self, msg: InboundMessage, source: str, reason: str,
                   error: BaseException | None = None, *, payload: bytes | None = None,
                   timeout_s: float = 5.0) -> None:
        """Dead-letter ``msg`` with its reason; raises :class:`BusUnavailable` when the bus did
        not confirm it (the caller must then not settle the original). Dead-lettering the same
        delivery twice stays one entry. ``payload`` replaces bytes that must not be kept."""
        ...


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    holder: str
    revision: int


class LeaseTable(Protocol):
    """Keys held by one holder each until their time-to-live passes without a renewal."""

    async def acquire(self, key: str, holder: str) -> Lease | None:
        """The lease if ``key`` was free, None if someone holds it."""
        ...

    async def renew(self, lease: Lease) -> Lease | None:
        """The renewed lease, or None when it was lost (expired, maybe taken by another)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Free the key if ``lease`` still holds it."""
        ...

    async def holder(self, key: str) -> str | None: ...

    async def holders(self, prefix: str | tuple[str, ...]) -> dict[str, str]:
        """Every live key under ``prefix`` (or any of several) with its holder."""
        ...

    async def announce(self, holder: str) -> None:
        """Answer presence asks for ``holder`` for as long as this process is on the bus."""
        ...

    async def gone(self, holder: str) -> bool:
        """True only when the bus knows nobody who answers for ``holder`` (the process that
        announced it has no connection left: it died); an answer, or none in time (a slow or
        stalled process, a server in the way), is not gone."""
        ...

    async def evict(self, holder: str) -> list[str]:
        """Delete the keys ``holder`` holds, each checked against the revision read (one it
        renewed meanwhile stays); the keys deleted."""
        ...


class CommandStream(Protocol):
    """The region's enforcement stream: the newest command per account subject."""

    async def publish(self, message: OutboxMessage) -> None:
        """Publish, deduplicated by ``message_id``; BusUnavailable when not confirmed."""
        ...

    async def last(self, subject: str) -> tuple[int, bytes | None] | None:
        """The stream sequence and bytes of the newest command on ``subject`` (None: none);
        the bytes are None when that message is not signed by a trusted key (the gates refuse
        it, so for them the account has no command there)."""
        ...

    async def publish_after(self, message: OutboxMessage, last_sequence: int) -> bool:
        """Publish only if ``subject``'s newest command is still at ``last_sequence`` (0: none);
        False when a newer one arrived meanwhile."""
        ...


class SignalPublisher(Protocol):
    """The region's inputs, as an actor reaches another entity's actor: a score an account's
    decision forwards to the prompt it linked to (``core.prompt_links``), published from the
    outbox after the decision committed, as one of the region's producers."""

    async def publish(self, message: OutboxMessage) -> None:
        """Publish to the inputs stream, deduplicated by ``message_id``; BusUnavailable when not
        confirmed."""
        ...


class RegionBus(Protocol):
    """One process's connection to a region's bus, as an actor node uses it."""

    @property
    def ack_wait_s(self) -> float:
        """How long a delivered input may go unsettled before it is delivered again."""
        ...

    @property
    def max_deliveries(self) -> int:
        """Deliveries of one input after which the bus gives up on it."""
        ...

    @property
    def dead_letters(self) -> DeadLetterSink: ...

    @property
    def commands(self) -> CommandStream: ...

    @property
    def signals(self) -> SignalPublisher: ...

    def reconnects(self) -> int:
        """How often the connection was re-established (the relay repairs after each)."""
        ...

    async def provision(self) -> None:
        """Create or update the region's streams (idempotent)."""
        ...

    def signal_source(self, partition: int) -> SignalSource: ...

    async def lease_table(self, ttl_s: float) -> LeaseTable: ...

    async def run_policy(self, store: EventStore, apply: Callable[[Policy], None]) -> None:
        """Until cancelled: publish the newest policy committed in ``store``'s policy history
        to the region, and ``apply`` every new one the region publishes."""
        ...


class BusConnector(Protocol):
    """How a node reaches its region's bus: ``async with connector.connect(name) as bus``."""

    def connect(self, name: str) -> AbstractAsyncContextManager[RegionBus]: ...
