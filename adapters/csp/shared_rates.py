"""GCRA rate state shared by the proxy's worker processes, so limits do not multiply by workers.

Each worker (``workers``) has its own gate, feed and cache; what they must not each keep is an
account's spent quota, or N workers would serve N times the account's rate. This table holds
every account's theoretical arrival times (requests and tokens) in one shared-memory block that
all workers map: ``take`` (a request) and ``charge`` (tokens after the response) read, decide and
write one account's slot under that slot's stripe lock, so two workers never both spend the last
unit of a window.

Layout: ``slots`` slots of 32 bytes (a 16-byte BLAKE2b digest of the account id, the requests'
TAT and the tokens' TAT, as float64), in buckets of 8 chosen by the digest. An account takes the
first free or stale slot of its bucket (a slot whose TATs have both passed holds no state: an
account there is as fresh as a new one); a full bucket evicts the slot nearest to stale, which
forgets that account's spent quota early (counted in ``evicted``; size the table to the accounts
active in a minute, 131,072 slots by default, 4 MiB). A tier change keeps the TATs as they are
(seconds ahead, not units spent), unlike one worker's own cache, which converts them. Workers
read ``gate_time``'s steady clock, each its own: one started after a wall-clock step is on the
stepped clock, so a request TAT further ahead than any take writes is read as one window spent.
"""

from __future__ import annotations

import hashlib
import struct
from multiprocessing import get_context, resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from safeguards.adapters.csp.gate_entry import RATE_WINDOW_S

_SLOT = struct.Struct("<16sdd")
_TATS = struct.Struct("<dd")
_EMPTY = bytes(16)
BUCKET = 8


class SharedRates:
    def __init__(self, memory: SharedMemory, locks: list[Any], *, owner: bool) -> None:
        buffer = memory.buf
        assert buffer is not None  # an open block
        self._memory = memory
        self._buffer: memoryview = buffer
        self._locks = locks
        self._owner = owner
        self.buckets = len(buffer) // (_SLOT.size * BUCKET)
        self.evicted = 0

    @classmethod
    def create(cls, slots: int = 1 << 17, stripes: int = 64) -> SharedRates:
        """A new, zeroed table (in the parent, before the workers start)."""
        if slots < BUCKET or slots % BUCKET:
            raise ValueError(f"slots must be a positive multiple of {BUCKET}")
        memory = SharedMemory(create=True, size=slots * _SLOT.size)  # zero-filled (a new mmap)
        context = get_context("spawn")
        return cls(memory, [context.Lock() for _ in range(stripes)], owner=True)

    def handle(self) -> tuple[str, list[Any]]:
        """What a worker needs to ``attach`` (picklable into a spawned process)."""
        return self._memory.name, self._locks

    @classmethod
    def attach(cls, handle: tuple[str, list[Any]]) -> SharedRates:
        name, locks = handle
        memory = SharedMemory(name=name)
        # The creator owns the block; a worker that attaches must not have the resource tracker
        # unlink it when the worker exits (Python < 3.13 registers every attach).
        resource_tracker.unregister(memory._name, "shared_memory")  # type: ignore[attr-defined]
        return cls(memory, locks, owner=False)

    def close(self) -> None:
        self._buffer.release()
        self._memory.close()
        if self._owner:
            self._memory.unlink()

    def _slot(self, account: str, now: float) -> tuple[int, bytes, Any]:
        """The offset of the account's slot (claimed if it had none) and its bucket's lock."""
        key = hashlib.blake2b(account.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        bucket = int.from_bytes(key[:8], "little") % self.buckets
        start = bucket * BUCKET * _SLOT.size
        return start, key, self._locks[bucket % len(self._locks)]

    def _find(self, start: int, key: bytes, now: float) -> int:
        buffer = self._buffer
        free = -1
        oldest, oldest_at = -1, float("inf")
        for i in range(BUCKET):
            at = start + i * _SLOT.size
            slot_key, req_tat, tok_tat = _SLOT.unpack_from(buffer, at)
            if slot_key == key:
                return at
            latest = max(req_tat, tok_tat)
            if free < 0 and (slot_key == _EMPTY or latest <= now):
                free = at
            if latest < oldest_at:
                oldest, oldest_at = at, latest
        if free < 0:
            free = oldest
            self.evicted += 1
        _SLOT.pack_into(buffer, free, key, 0.0, 0.0)
        return free

    def take(self, account: str, now: float, req_interval: float) -> tuple[str, float] | None:
        """Spend one request: None, or the throttle's reason and seconds until it would pass."""
        start, key, lock = self._slot(account, now)
        with lock:
            at = self._find(start, key, now)
            req_tat, tok_tat = _TATS.unpack_from(self._buffer, at + 16)
            if req_tat > now + 2 * RATE_WINDOW_S:
                # No take writes a request TAT over a window ahead: a worker whose clock runs
                # ahead of this one's wrote it (it started before a wall-clock step that this one
                # started after, ``gate_time``). Count the window spent, not the clocks' gap
                # (while two clocks disagree, an account may spend a window on each).
                req_tat = now + RATE_WINDOW_S
                _TATS.pack_into(self._buffer, at + 16, req_tat, tok_tat)
            new_tat = (req_tat if req_tat > now else now) + req_interval
            if new_tat - now > RATE_WINDOW_S:
                return "rate_requests", new_tat - now - RATE_WINDOW_S
            if tok_tat - now > RATE_WINDOW_S:  # tokens are charged after: refuse while in debt
                return "rate_tokens", tok_tat - now - RATE_WINDOW_S
            _TATS.pack_into(self._buffer, at + 16, new_tat, tok_tat)
        return None

    def charge(self, account: str, now: float, cost_s: float) -> None:
        """Charge tokens (``cost_s``: their count times the tier's token interval)."""
        start, key, lock = self._slot(account, now)
        with lock:
            at = self._find(start, key, now)
            req_tat, tok_tat = _TATS.unpack_from(self._buffer, at + 16)
            _TATS.pack_into(self._buffer, at + 16, req_tat,
                            (tok_tat if tok_tat > now else now) + cost_s)
