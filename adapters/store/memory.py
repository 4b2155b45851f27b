"""The in-memory event store: the PostgreSQL store's semantics without a server.

Used by simulations and tests, and held to the same contract suite as the real store. Every
operation runs without an await in between its checks and its writes, so on one event loop each
append is atomic, exactly as the PostgreSQL transaction is. Snapshots go through the codec, so a
change of ``FOLD_VERSION`` discards them here as it does there.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from safeguards.adapters.store.bodies import BodyPacker
from safeguards.adapters.store.chain_keys import chain_row, load_chain_key
from safeguards.adapters.store.erase import Erasure, forwards, tombstone
from safeguards.adapters.store.reviews import REVIEW_TYPES, open_review
from safeguards.adapters.store.sealing import (
    DataKey,
    Sealing,
    load_data_master_key,
    might_be_sealed,
    needs_key,
    open_body,
    seal_map,
)
from safeguards.adapters.store.validation import (
    DEFAULT_SNAPSHOT_EVERY,
    UnencodableBody,
    check_batch,
    check_limit,
    check_range,
    check_request,
    check_state_at,
    check_text,
    crosses_snapshot,
)
from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.backtest import strike_potential
from safeguards.core.chain import GENESIS, ChainRow, link
from safeguards.core.erasure import ERASED
from safeguards.core.errors import ConcurrencyConflict, InvalidInput
from safeguards.core.events import Event
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.ports import (
    AccountRisk,
    AppendRequest,
    AppendResult,
    FeedEntry,
    OpenReview,
    OutboxMessage,
    PendingOutbox,
)
from safeguards.core.state import AccountState, fold, initial_state
from safeguards.core.subjects import enforce_subject


@dataclass
class _Outbox:
    pending: PendingOutbox
    published: bool = False


@dataclass
class _Stream:
    events: list[Event] = field(default_factory=list)
    chains: list[bytes] = field(default_factory=list)  # each event's chain link (core.chain)
    bodies: list[bytes] = field(default_factory=list)  # each body as stored (personal sealed)
    # (version, fold version) -> encoded state; encoded so FOLD_VERSION changes are honoured
    snapshots: dict[tuple[int, int], bytes] = field(default_factory=dict)


class InMemoryEventStore:
    """One region's event store in process memory."""

    def __init__(self, region: str, *, snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 chain_key: bytes | None = None, data_key: bytes | None = None) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self._region = validate_region(region)
        self._chain_key = chain_key or load_chain_key(self._region)
        # Personal fields are sealed as the PostgreSQL store seals them (sealing.py): the
        # stored bytes, and so the chain, are what erasure leaves behind.
        self._sealing = Sealing(self._region, data_key or load_data_master_key(self._region))
        self._data_keys: dict[str, DataKey] = {}
        self._packer = BodyPacker()
        self.snapshot_every = snapshot_every
        self._streams: dict[str, _Stream] = {}
        self._feed: list[Event] = []  # index i holds position i + 1
        self._inbox: set[str] = set()
        self._event_ids: set[str] = set()
        self._outbox: dict[int, _Outbox] = {}
        self._next_outbox_id = 1

    @property
    def region(self) -> str:
        return self._region

    # --- writes ---------------------------------------------------------------------------------

    def _version(self, account_id: str) -> int:
        stream = self._streams.get(account_id)
        return len(stream.events) if stream else 0

    def _apply(self, request: AppendRequest,
               bodies: list[bytes]) -> AppendResult | ConcurrencyConflict:
        current = self._version(request.account_id)
        if request.inbox_key is not None and request.inbox_key in self._inbox:
            return AppendResult(request.account_id, current, duplicate=True)
        if request.expected_version != current:
            return ConcurrencyConflict(request.account_id, request.expected_version, current)
        event_ids = {e.event_id for e in request.events}
        if len(event_ids) != len(request.events) or any(
            e.event_id in self._event_ids for e in request.events
        ):
            return ConcurrencyConflict(request.account_id, request.expected_version, current)
        if request.inbox_key is not None:
            self._inbox.add(request.inbox_key)
        if request.events:
            stream = self._streams.setdefault(request.account_id, _Stream())
            for event, body in zip(request.events, bodies, strict=True):
                previous = stream.chains[-1] if stream.chains else GENESIS
                stream.chains.append(link(self._chain_key, previous, chain_row(event, body, None)))
                stream.bodies.append(body)
            stream.events.extend(request.events)
            self._feed.extend(request.events)
            self._event_ids.update(event_ids)
        for message in request.outbox:
            self._outbox[self._next_outbox_id] = _Outbox(
                PendingOutbox(self._next_outbox_id, message, 0))
            self._next_outbox_id += 1
        new_version = current + len(request.events)
        if crosses_snapshot(current, new_version, self.snapshot_every):
            self._snapshot(request.account_id, new_version)
        return AppendResult(request.account_id, new_version)

    def _snapshot(self, account_id: str, version: int) -> None:
        self._put_snapshot(self._state(account_id, version))

    async def save_snapshot(self, state: AccountState) -> None:
        """Store ``state`` as the snapshot at its version (a cache; never the truth)."""
        self._put_snapshot(state)

    def _put_snapshot(self, state: AccountState) -> None:
        stream = self._streams.setdefault(state.account_id, _Stream())
        # Like the table's primary key with ON CONFLICT DO NOTHING: the first one written stays.
        stream.snapshots.setdefault((state.version, fold_module.FOLD_VERSION),
                                    codec.encode_state(state))

    def _packed_bodies(self, requests: Sequence[AppendRequest]) -> list[list[bytes]]:
        """Each request's bodies as stored, personal fields sealed (chained from these bytes);
        what the PostgreSQL store finds when it packs them: an unencodable one refuses the
        whole batch."""
        packed: list[list[bytes]] = []
        for request in requests:
            bodies = []
            for event in request.events:
                try:
                    bodies.append(self._pack(event))
                except (TypeError, ValueError, OverflowError) as exc:
                    raise UnencodableBody(event.version, exc) from None
            packed.append(bodies)
        return packed

    def _pack(self, event: Event) -> bytes:
        if not needs_key(event.body):
            return codec.pack_body(event.body)
        key = self._data_keys.get(event.account_id)
        if key is None:
            key = self._data_keys[event.account_id] = self._sealing.new_key(event.account_id)[0]
        return self._packer.pack_map(seal_map(self._sealing, event.account_id, key,
                                              event.body.TYPE, self._packer.to_map(event.body)))

    async def erase(self, account_id: str, operator: str, now: datetime) -> Erasure:
        """``PostgresEventStore.erase`` (``erase.py``): the key destroyed, what it sealed read
        as erased from here on, snapshots dropped, commands' reasons blanked, the tombstone."""
        validate_account_id(account_id)
        check_text(operator, "operator")
        stream = self._streams.get(account_id)
        if stream is None or not stream.events:
            raise InvalidInput("the account has no events in this region")
        keys = int(self._data_keys.pop(account_id, None) is not None)
        self._sealing.forget(account_id)
        erased: dict[str, Event] = {}
        for i, (e, stored) in enumerate(zip(stream.events, stream.bodies, strict=True)):
            if might_be_sealed(stored):
                stream.events[i] = erased[e.event_id] = dataclasses.replace(e, body=open_body(
                    self._sealing, e.type, e.schema_version, stored, account_id, e.event_id, None))
        self._feed = [erased.get(e.event_id, e) if e.account_id == account_id else e
                      for e in self._feed]
        snapshots = len(stream.snapshots)
        stream.snapshots.clear()
        subject, rewritten = enforce_subject(self._region, account_id), 0
        for entry in self._outbox.values():
            message = entry.pending.message
            command = codec.decode_command(message.payload) if message.subject == subject else None
            if command is not None and command.reason != ERASED:
                payload = codec.encode_command(dataclasses.replace(command, reason=ERASED))
                entry.pending = dataclasses.replace(entry.pending, message=dataclasses.replace(
                    message, payload=payload))
                rewritten += 1
        for outbox_id in [i for i, entry in self._outbox.items() if entry.published
                          and forwards(entry.pending.message.payload, account_id)]:
            del self._outbox[outbox_id]
            rewritten += 1
        version = len(stream.events)
        event = tombstone(account_id, self._region, version, operator, keys, now)
        request = AppendRequest(account_id, version, (event,))
        self._apply(request, self._packed_bodies([request])[0])
        return Erasure(account_id, version, version + 1, keys, snapshots, rewritten)

    async def append(self, request: AppendRequest) -> AppendResult:
        check_request(self._region, request)
        (bodies,) = self._packed_bodies([request])
        result = self._apply(request, bodies)
        if isinstance(result, ConcurrencyConflict):
            raise result
        return result

    async def append_batch(
        self, requests: Sequence[AppendRequest]
    ) -> list[AppendResult | ConcurrencyConflict]:
        check_batch(self._region, requests)
        packed = self._packed_bodies(requests)
        return [self._apply(r, b) for r, b in zip(requests, packed, strict=True)]

    # --- reads ----------------------------------------------------------------------------------

    def _state(self, account_id: str, version: int) -> AccountState:
        """The state at ``version`` (at most the current one): best snapshot plus the tail."""
        stream = self._streams.get(account_id)
        state = initial_state(account_id, self._region)
        if stream is None:
            return state
        version = min(version, len(stream.events))
        usable = [v for v, f in stream.snapshots if f == fold_module.FOLD_VERSION and v <= version]
        if usable:
            best = max(usable)
            decoded = codec.decode_state(stream.snapshots[best, fold_module.FOLD_VERSION])
            if decoded is not None:
                state = decoded
        return fold(state, stream.events[state.version:version])

    async def load(self, account_id: str) -> AccountState:
        validate_account_id(account_id)
        return self._state(account_id, self._version(account_id))

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        for account_id in account_ids:
            validate_account_id(account_id)
        return {a: self._state(a, self._version(a)) for a in account_ids}

    async def chain(self, account_id: str) -> list[ChainRow]:
        validate_account_id(account_id)
        stream = self._streams.get(account_id)
        if stream is None:
            return []
        return [chain_row(e, b, c)
                for e, b, c in zip(stream.events, stream.bodies, stream.chains, strict=True)]

    async def history(
        self,
        account_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        validate_account_id(account_id)
        check_range(from_version, to_version, since, until)
        stream = self._streams.get(account_id)
        if stream is None:
            return []
        end = len(stream.events) if to_version is None else to_version
        return [e for e in stream.events[from_version - 1:end]
                if (since is None or e.occurred_at >= since)
                and (until is None or e.occurred_at <= until)]

    async def state_at(
        self, account_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> AccountState:
        validate_account_id(account_id)
        check_state_at(version, at)
        if at is not None:
            stream = self._streams.get(account_id)
            events = stream.events if stream else []
            version = max((e.version for e in events if e.occurred_at <= at), default=0)
        assert version is not None
        return self._state(account_id, version)

    async def read_feed(self, after_position: int, limit: int) -> list[FeedEntry]:
        check_limit(limit)
        if after_position < 0:
            raise InvalidInput("after_position must be >= 0")
        chunk = self._feed[after_position:after_position + limit]
        return [FeedEntry(after_position + 1 + i, e) for i, e in enumerate(chunk)]

    async def histories(self, account_ids: Sequence[str]) -> dict[str, list[Event]]:
        out = {}
        for account in account_ids:
            validate_account_id(account)
            stream = self._streams.get(account)
            if stream is not None and stream.events:
                out[account] = list(stream.events)
        return out

    async def account_risks(self, since: datetime | None = None) -> list[AccountRisk]:
        out = []
        for account in sorted(self._streams):
            events = self._streams[account].events
            if events:
                out.append(AccountRisk(
                    account, sum(since is None or e.occurred_at >= since for e in events),
                    max(strike_potential(e.body) for e in events)))
        return out

    async def pending_outbox(self, limit: int) -> list[PendingOutbox]:
        """Unpublished messages, oldest first; each call counts one attempt for each message."""
        check_limit(limit)
        out = []
        for outbox_id in sorted(self._outbox):
            row = self._outbox[outbox_id]
            if row.published:
                continue
            row.pending = PendingOutbox(outbox_id, row.pending.message, row.pending.attempts + 1)
            out.append(row.pending)
            if len(out) == limit:
                break
        return out

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        for outbox_id in outbox_ids:
            row = self._outbox.get(outbox_id)
            if row is not None:
                row.published = True

    async def mark_published_messages(self, message_ids: Sequence[str]) -> None:
        wanted = set(message_ids)
        for row in self._outbox.values():
            if not row.published and row.pending.message.message_id in wanted:
                row.published = True

    async def latest_published(self, scan: int) -> list[OutboxMessage]:
        check_limit(scan)
        published = [i for i in sorted(self._outbox, reverse=True) if self._outbox[i].published]
        newest: dict[str, OutboxMessage] = {}
        for outbox_id in published[:scan]:
            message = self._outbox[outbox_id].pending.message
            newest.setdefault(message.subject, message)
        return sorted(newest.values(), key=lambda m: m.subject)

    async def inbox_contains(self, inbox_key: str) -> bool:
        return inbox_key in self._inbox

    async def account_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        check_limit(limit)
        names = sorted(a for a, s in self._streams.items() if s.events)
        start = 0 if after is None else bisect.bisect_right(names, after)
        return names[start:start + limit]

    async def open_reviews(self, *, after: str | None = None,
                           limit: int = 1000) -> list[OpenReview]:
        check_limit(limit)
        out: list[OpenReview] = []
        for account in sorted(self._streams):
            if after is not None and account <= after:
                continue
            review = open_review(e for e in self._streams[account].events
                                 if e.type in REVIEW_TYPES)
            if review is not None:
                out.append(review)
                if len(out) == limit:
                    break
        return out

    async def snapshot_versions(self, account_id: str) -> list[int]:
        """Versions of the account's snapshots that the current fold can use, ascending."""
        stream = self._streams.get(account_id)
        if stream is None:
            return []
        return sorted(v for v, f in stream.snapshots if f == fold_module.FOLD_VERSION)
