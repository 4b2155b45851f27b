"""The bus port's in-memory twin: a broker in one process, for tests and simulations.

``MemoryBroker`` stands in for a region's JetStream: input messages per partition with durable
delivery state (ack wait, redelivery after the consumer's backoff or a nak's delay, a limit on
deliveries, in-progress, term), the enforcement stream (newest command per subject, message-id
deduplication, publish-if-last), forwarded signals onto the inputs (message-id deduplication),
dead letters, leases with a time-to-live, and the policy board.
It keeps JetStream's semantics where the actors rely on them and passes the same contract suite
(``tests/actors/test_bus_contract.py``); time comes from ``monotonic`` (anyio's clock unless
a test passes its own).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from safeguards.adapters.bus.policy_board import PublishedPolicy, run_policy
from safeguards.core.bus import BusUnavailable, InboundMessage, Lease
from safeguards.core.ids import validate_region
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore, OutboxMessage
from safeguards.core.subjects import stream_name


@dataclass(slots=True)
class _Stored:
    subject: str
    data: bytes
    sequence: int
    headers: dict[str, str] = field(default_factory=dict)
    deliveries: int = 0
    due: float = 0.0  # when it may be delivered (again)
    done: bool = False  # acked or terminated


@dataclass(slots=True)
class DeadLetter:
    subject: str
    data: bytes
    source: str
    reason: str
    error: str | None
    stream: str
    sequence: int
    deliveries: int


@dataclass
class MemoryBroker:
    """One region's bus, shared by every connection made to it."""

    region: str
    backoff: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 60.0)
    max_deliver: int = 20
    monotonic: Callable[[], float] = anyio.current_time
    available: bool = True  # False: every operation raises BusUnavailable (an outage)
    inputs: dict[int, list[_Stored]] = field(default_factory=dict)
    commands: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    command_ids: set[str] = field(default_factory=set)
    signal_ids: set[str] = field(default_factory=set)  # forwarded signals' message ids
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letter_ids: set[str] = field(default_factory=set)
    leases: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # holder, rev, until
    present: set[str] = field(default_factory=set)  # lease holders announced (and not died)
    policy: PublishedPolicy | None = None  # the policy board's entry
    policy_changed: anyio.Event | None = None  # set (and replaced) when the entry changes
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: anyio.Event | None = None

    def __post_init__(self) -> None:
        self.region = validate_region(self.region)

    def check(self) -> None:
        if not self.available:
            raise BusUnavailable("the in-memory bus is down")

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self, timeout_s: float) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(max(0.0, timeout_s)):
            await self._changed.wait()

    def publish_input(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> int:
        """A signal on ``sg.<region>.acct.<partition>.<token>``; its stream sequence."""
        self.check()
        parts = subject.split(".")
        if len(parts) != 5 or parts[:3] != ["sg", self.region, "acct"] or not parts[3].isdigit():
            raise ValueError(f"not an input subject of region {self.region}: {subject[:80]!r}")
        seq = next(self._sequence)
        self.inputs.setdefault(int(parts[3]), []).append(
            _Stored(subject, data, seq, dict(headers or {}), due=self.monotonic()))
        self.notify()
        return seq

    def pending(self, partition: int) -> int:
        return sum(not m.done for m in self.inputs.get(partition, ()))


@dataclass(frozen=True, slots=True)
class MemoryBus:
    """The connector (``core.bus.BusConnector``) of a ``MemoryBroker``."""

    broker: MemoryBroker

    @contextlib.asynccontextmanager
    async def connect(self, name: str) -> AsyncIterator[MemoryRegionBus]:
        self.broker.check()
        yield MemoryRegionBus(self.broker)


class MemoryMessage:
    """One delivery (``core.bus.InboundMessage``); settling a stale delivery does nothing."""

    __slots__ = ("_broker", "_delivery", "_stored", "stream")

    def __init__(self, broker: MemoryBroker, stored: _Stored) -> None:
        self._broker, self._stored, self._delivery = broker, stored, stored.deliveries
        self.stream = stream_name(broker.region, "INPUTS")

    @property
    def subject(self) -> str:
        return self._stored.subject

    @property
    def data(self) -> bytes:
        return self._stored.data

    @property
    def headers(self) -> dict[str, str]:
        return self._stored.headers

    @property
    def sequence(self) -> int:
        return self._stored.sequence

    @property
    def deliveries(self) -> int:
        return self._delivery

    def _current(self) -> _Stored | None:
        self._broker.check()
        s = self._stored
        return s if not s.done and s.deliveries == self._delivery else None

    async def ack(self) -> None:
        if (s := self._current()) is not None:
            s.done = True

    async def term(self) -> None:
        await self.ack()

    async def nak(self, delay: float | None = None) -> None:
        if (s := self._current()) is not None:
            s.due = self._broker.monotonic() + (delay or 0.0)
            self._broker.notify()

    async def in_progress(self) -> None:
        if (s := self._current()) is not None:
            s.due = self._broker.monotonic() + self._broker.backoff[0]


class MemorySignalSource:
    """A partition's durable consumer (``core.bus.SignalSource``): delivery state lives in the
    broker, so two sources of one partition share it as two JetStream clients would."""

    def __init__(self, broker: MemoryBroker, partition: int) -> None:
        self.broker, self.partition = broker, partition
        self._interrupted = False

    async def open(self) -> None:
        self.broker.check()

    def _take(self, batch: int) -> list[MemoryMessage]:
        b, now = self.broker, self.broker.monotonic()
        out: list[MemoryMessage] = []
        for s in b.inputs.get(self.partition, ()):
            if len(out) >= batch:
                break
            if s.done or s.due > now or s.deliveries >= b.max_deliver:
                continue
            s.deliveries += 1
            s.due = now + b.backoff[min(s.deliveries, len(b.backoff)) - 1]
            out.append(MemoryMessage(b, s))
        return out

    async def fetch(self, batch: int, timeout_s: float) -> Sequence[MemoryMessage]:
        self.broker.check()
        deadline = anyio.current_time() + timeout_s
        while not self._interrupted:
            got = self._take(batch)
            left = deadline - anyio.current_time()
            if got or left <= 0:
                return got
            await self.broker.changed(min(left, 0.05))  # redeliveries fall due without a signal
        return []

    def interrupt(self) -> None:
        self._interrupted = True
        self.broker.notify()

    async def keep_alive(self) -> None:
        self.broker.check()  # nothing is held here between fetches

    async def close(self) -> None:
        self.interrupt()


class MemoryDeadLetters:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def send(self, msg: InboundMessage, source: str, reason: str,
                   error: BaseException | None = None, *, payload: bytes | None = None,
                   timeout_s: float = 5.0) -> None:
        b = self.broker
        b.check()
        key = f"dlq:{msg.stream}:{msg.sequence}"
        if key in b.dead_letter_ids:
            return
        b.dead_letter_ids.add(key)
        b.dead_letters.append(DeadLetter(
            msg.subject, msg.data if payload is None else payload, source, str(reason),
            None if error is None else type(error).__name__, msg.stream, msg.sequence,
            msg.deliveries))


class MemoryCommands:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def publish(self, message: OutboxMessage) -> None:
        b = self.broker
        b.check()
        if message.message_id in b.command_ids:
            return
        b.command_ids.add(message.message_id)
        b.commands.setdefault(message.subject, []).append((next(b._sequence), message.payload))

    async def last(self, subject: str) -> tuple[int, bytes | None] | None:
        self.broker.check()
        entries = self.broker.commands.get(subject)
        return entries[-1] if entries else None

    async def publish_after(self, message: OutboxMessage, last_sequence: int) -> bool:
        last = await self.last(message.subject)
        if (0 if last is None else last[0]) != last_sequence:
            return False
        await self.publish(message)
        return True



class MemorySignals:
    """Forwarded signals onto the inputs, deduplicated by message id as JetStream does."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def publish(self, message: OutboxMessage) -> None:
        b = self.broker
        b.check()
        if message.message_id in b.signal_ids:
            return
        b.publish_input(message.subject, message.payload)
        b.signal_ids.add(message.message_id)


class MemoryLeases:
    def __init__(self, broker: MemoryBroker, ttl_s: float) -> None:
        self.broker, self.ttl_s = broker, ttl_s

    def _live(self, key: str) -> tuple[str, int, float] | None:
        self.broker.check()
        held = self.broker.leases.get(key)
        return held if held is not None and held[2] > self.broker.monotonic() else None

    def _put(self, key: str, holder: str) -> Lease:
        rev = next(self.broker._sequence)
        self.broker.leases[key] = (holder, rev, self.broker.monotonic() + self.ttl_s)
        return Lease(key, holder, rev)

    async def acquire(self, key: str, holder: str) -> Lease | None:
        return None if self._live(key) is not None else self._put(key, holder)

    async def renew(self, lease: Lease) -> Lease | None:
        held = self._live(lease.key)
        if held is None or held[1] != lease.revision:
            return None
        return self._put(lease.key, lease.holder)

    async def release(self, lease: Lease) -> None:
        held = self._live(lease.key)
        if held is not None and held[1] == lease.revision:
            del self.broker.leases[lease.key]

    async def holder(self, key: str) -> str | None:
        held = self._live(key)
        return None if held is None else held[0]

    async def holders(self, prefix: str | tuple[str, ...]) -> dict[str, str]:
        return {k: h for k in list(self.broker.leases) if k.startswith(prefix)
                and (h := await self.holder(k)) is not None}

    async def announce(self, holder: str) -> None:
        self.broker.check()
        self.broker.present.add(holder)

    async def gone(self, holder: str) -> bool:
        self.broker.check()
        return holder not in self.broker.present

    async def evict(self, holder: str) -> list[str]:
        held = await self.holders("")
        for key in (out := sorted(k for k, h in held.items() if h == holder)):
            del self.broker.leases[key]
        return out


class MemoryRegionBus:
    """``core.bus.RegionBus`` over a ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.dead_letters = MemoryDeadLetters(broker)
        self.commands = MemoryCommands(broker)
        self.signals = MemorySignals(broker)

    @property
    def ack_wait_s(self) -> float:
        return self.broker.backoff[0]

    @property
    def max_deliveries(self) -> int:
        return self.broker.max_deliver

    def reconnects(self) -> int:
        return 0

    async def provision(self) -> None:
        self.broker.check()

    def signal_source(self, partition: int) -> MemorySignalSource:
        return MemorySignalSource(self.broker, partition)

    async def lease_table(self, ttl_s: float) -> MemoryLeases:
        self.broker.check()
        return MemoryLeases(self.broker, ttl_s)

    async def run_policy(self, store: EventStore, apply: Callable[[Policy], None]) -> None:
        board = MemoryPolicyBoard(self.broker)

        async def opened() -> MemoryPolicyBoard:
            self.broker.check()
            return board

        await run_policy(store, self.broker.region, opened, apply)


class MemoryPolicyBoard:
    """The policy board (``policy_board.Board``): one entry, written only by a newer version."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def wait_change(self, timeout_s: float) -> None:
        self.broker.check()
        if self.broker.policy_changed is None:
            self.broker.policy_changed = anyio.Event()
        with anyio.move_on_after(timeout_s):
            await self.broker.policy_changed.wait()

    async def read(self) -> tuple[PublishedPolicy | None, int]:
        self.broker.check()
        current = self.broker.policy
        return current, 0 if current is None else current.history_version

    async def publish(self, policy: PublishedPolicy) -> bool:
        current, _ = await self.read()
        if current is not None and current.history_version >= policy.history_version:
            return False
        self.broker.policy = policy
        changed, self.broker.policy_changed = self.broker.policy_changed, None
        if changed is not None:
            changed.set()  # every waiting follower wakes; later waits wait for the next change
        return True
