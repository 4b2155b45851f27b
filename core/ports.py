"""Ports: the Protocols the actors and operators program against.

Each port has an in-memory implementation and a real adapter, and both pass one contract suite
under ``tests/contracts/``. Async methods here are plain ``async def`` signatures: the core
imports no event loop library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from safeguards.core.chain import ChainRow
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.events import Event
from safeguards.core.state import AccountState


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish after the transaction that produced it commits."""

    message_id: str  # becomes Nats-Msg-Id, so a re-publish is deduplicated by JetStream
    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PendingOutbox:
    outbox_id: int
    message: OutboxMessage
    attempts: int


@dataclass(frozen=True, slots=True)
class AppendRequest:
    account_id: str
    expected_version: int  # the version the writer's decision was made on
    events: tuple[Event, ...]
    inbox_key: str | None = None  # idempotency key of the input that caused these events
    outbox: tuple[OutboxMessage, ...] = ()
    # The writer's own fold of ``events`` onto the state at ``expected_version``, when it has it
    # (actors do: decide_and_fold). Stores use it for snapshots instead of folding again; a
    # snapshot is a cache, and one whose version does not match the append is ignored.
    state_after: AccountState | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    account_id: str
    version: int  # the account's version after the append (unchanged for a duplicate)
    duplicate: bool = False  # the inbox key was already recorded: nothing was written


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One event in the region's ordered feed; positions only grow, in commit order."""

    position: int
    event: Event


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """What a backtest needs to know before reading an account: how many of its events are in
    scope and the highest strike potential among all of them (``core.backtest``)."""

    account_id: str
    events_since: int
    strike_potential: float


@dataclass(frozen=True, slots=True)
class OpenReview:
    """An account waiting for a person: its latest ``ReviewRequested`` and who (if anyone) took
    it. A review stays open until an operator sets or clears the account's level."""

    account_id: str
    version: int  # of the ReviewRequested
    requested_at: datetime
    proposed_level: int
    rule_id: str
    reason: str
    claimed_by: str | None = None
    claimed_at: datetime | None = None


class EventStore(Protocol):
    """One region's event store. It refuses events of any other region."""

    @property
    def region(self) -> str: ...

    async def append(self, request: AppendRequest) -> AppendResult:
        """Atomically: record the inbox key, append the events at ``expected_version + 1..``,
        write the outbox rows. A duplicate inbox key writes nothing and returns
        ``duplicate=True``; a lost version race raises :class:`ConcurrencyConflict`."""
        ...

    async def append_batch(
        self, requests: Sequence[AppendRequest]
    ) -> list[AppendResult | ConcurrencyConflict]:
        """Group commit: many accounts' appends in one round trip. Each request succeeds or fails
        on its own; a conflict for one account leaves the others committed."""
        ...

    async def load(self, account_id: str) -> AccountState:
        """The account's current state: latest valid snapshot plus the tail after it."""
        ...

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        """``load`` of many accounts in a few round trips (a node taking over partitions
        activates thousands); an account without events gets its initial state."""
        ...

    async def chain(self, account_id: str) -> list[ChainRow]:
        """The account's stored events with their chain links, in version order, as stored
        (``core.chain.verify`` checks them)."""
        ...

    async def history(
        self,
        account_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]: ...

    async def state_at(
        self, account_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> AccountState:
        """The state as of a version, or as of a time (all events with occurred_at <= at)."""
        ...

    async def read_feed(self, after_position: int, limit: int) -> list[FeedEntry]:
        """Events after ``after_position`` in commit order; never skips a late commit."""
        ...

    async def histories(self, account_ids: Sequence[str]) -> dict[str, list[Event]]:
        """The whole histories of several accounts in one read (each in version order; an
        account without events is left out). A history retention truncated is its kept events:
        they follow on from its retention base (``adapters/store/retention_base.py``)."""
        ...

    async def account_risks(self, since: datetime | None = None) -> list[AccountRisk]:
        """Every account of the region with its events since ``since`` counted and its highest
        strike potential (over all its events), in account order."""
        ...

    async def pending_outbox(self, limit: int) -> list[PendingOutbox]: ...

    async def mark_published(self, outbox_ids: Sequence[int]) -> None: ...

    async def mark_published_messages(self, message_ids: Sequence[str]) -> None:
        """``mark_published`` by message id, for a relay that published rows straight from the
        commit, without reading them back; ids that are not pending are ignored."""
        ...

    async def latest_published(self, scan: int) -> list[OutboxMessage]:
        """Among the ``scan`` most recently published outbox rows, the newest of each subject
        (for a relay that re-checks what a crashed broker may have lost)."""
        ...

    async def inbox_contains(self, inbox_key: str) -> bool: ...

    async def account_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Account ids with at least one event, ascending; for backtests and operator listings."""
        ...

    async def open_reviews(self, *, after: str | None = None,
                           limit: int = 1000) -> list[OpenReview]:
        """The region's review queue: accounts (ascending, after ``after``) whose latest
        ``ReviewRequested`` no operator has yet decided with a ``set_level`` or ``clear``."""
        ...


class FieldSealer(Protocol):
    """An account's data key (``core.erasure``): personal values sealed under it (AES-GCM, bound
    to the account and a label) open only while the key lives; ``erase`` destroys it, after
    which what it sealed never opens again (``open`` returns None) and a later ``seal`` makes a
    new key. The event stores seal events' personal fields with the same keys."""

    async def seal(self, account_id: str, label: str, plaintext: bytes) -> bytes: ...

    async def open(self, account_id: str, label: str, sealed: bytes) -> bytes | None:
        """The plaintext; None when no live key of the account sealed it (the key was
        destroyed, or it is another account's). A blob altered, or presented for another
        label (or account, under the same key), raises ``SealBroken``."""
        ...

    async def erase(self, account_id: str) -> int:
        """Destroy the account's data key; how many keys there were (0 or 1)."""
        ...
