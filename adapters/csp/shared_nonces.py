"""Caller-assertion nonces shared by the proxy's worker processes: an assertion is taken once per
proxy, not once per worker. A single-process gate (the proxy without workers, ext_proc) keeps
the same table in its own memory (``in_process``): one bound and one refusal everywhere. This is
the host's table, the cheap first look; the region's ledger (``nonce_ledger``) then takes the
nonce once for every host of the region.

Each worker (``workers``) checks caller assertions itself (``caller_auth``), and a nonce taken
in one process's memory only would let a captured assertion be replayed once on every other
worker (the kernel spreads connections over them). This table holds every nonce taken in the
accepted window in one shared-memory block that all workers map: ``take`` looks the nonce up
and claims a slot for it under its bucket's stripe lock (as ``shared_rates`` does), so two
workers never both accept one nonce.

Layout: ``slots`` slots in buckets of ``BUCKET``; a bucket is its 64 nonces (16 bytes each, as
sent) and then their 64 expiries (int64 unix seconds). A nonce's bucket is chosen by a BLAKE2b
keyed with a secret made when the table is made, so no caller can aim its nonces at one bucket.
An entry holds while the assertion it came with could still be accepted: until its ``ts`` plus
``MAX_SKEW_S`` plus ``GRACE_S`` (a second for the workers' reads of one clock to disagree by),
then its slot is free again; nothing sweeps the table, an insert reuses an expired slot. A nonce
found alive is ``replayed``. A bucket whose 64 slots all hold live nonces is full: the nonce is
refused as ``replay_table_full`` (fail closed, counted and logged) rather than an entry inside
the window being forgotten. The empty slot needs no marker: its expiry, 0, has passed.

Size (``slots_for``): a proxy serving ``max_rate`` signed requests a second holds
``max_rate × (MAX_SKEW_S + GRACE_S)`` live nonces (an honest front door signs with its current
time); the table has ``LOAD`` times as many slots, so that at that rate a bucket is on average
half full and, the buckets being filled at random, an insert finds its bucket full about 4 times
in 10**7.
Each slot is 24 bytes: 1,000 requests/s (the default) is 602,048 slots, 14.4 MB (in one process:
private anonymous pages, made with the table, so that no request pays for a page's first touch).
A caller that holds a caller key and signs with times ahead of the clock makes its nonces live
up to twice as long; past the sized rate the table fills and refuses, as it should.
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import secrets
import struct
import threading
import time
from multiprocessing import get_context, resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from safeguards.adapters.bus.nonce_bucket import ASSERTION_SKEW_S

log = logging.getLogger(__name__)

# how far an assertion's time may be from the gate's clock (caller_auth; the region's ledger
# keeps its nonces for as long: bus.nonce_bucket)
MAX_SKEW_S = ASSERTION_SKEW_S
REPLAYED = "replayed"
REPLAY_TABLE_FULL = "replay_table_full"
BUCKET = 64
GRACE_S = 1
LOAD = 2
_NONCE = 16
_KEYS_BYTES = BUCKET * _NONCE
_BUCKET_BYTES = BUCKET * (_NONCE + 8)
_EXPIRIES = struct.Struct(f"<{BUCKET}q")
_EXPIRY = struct.Struct("<q")
DEFAULT_MAX_RATE = 1000.0
Handle = tuple[str, list[Any], bytes]


def slots_for(max_rate: float) -> int:
    """The slots a table needs for ``max_rate`` signed requests a second (whole buckets)."""
    if not max_rate > 0:
        raise ValueError("the maximum request rate must be positive")
    live = max_rate * (MAX_SKEW_S + GRACE_S) * LOAD
    return max(1, math.ceil(live / BUCKET)) * BUCKET


def table_bytes(slots: int) -> int:
    return slots // BUCKET * _BUCKET_BYTES


def _commit(memory: SharedMemory) -> None:
    """Write every page now: a /dev/shm too small for the table fails here, at the start, not
    with a SIGBUS in a worker on the page that first overflows it; and no request pays for the
    page's first write."""
    buffer = memory.buf
    assert buffer is not None
    zeros = bytes(1 << 20)
    for at in range(0, len(buffer), len(zeros)):
        end = min(at + len(zeros), len(buffer))
        buffer[at:end] = zeros[:end - at]


def _check_slots(slots: int) -> None:
    if slots < BUCKET or slots % BUCKET:
        raise ValueError(f"slots must be a positive multiple of {BUCKET}")


class SharedNonces:
    def __init__(self, memory: SharedMemory | mmap.mmap, locks: list[Any], hash_key: bytes, *,
                 owner: bool) -> None:
        buffer = memory.buf if isinstance(memory, SharedMemory) else memoryview(memory)
        assert buffer is not None  # an open block
        self._memory = memory
        self._buffer: memoryview = buffer
        self._locks = locks
        self._hash_key = hash_key
        self._owner = owner
        self.buckets = len(buffer) // _BUCKET_BYTES
        self.slots = self.buckets * BUCKET
        self.full = 0  # this process's refusals for a full bucket
        self._full_logged_at = -math.inf

    @classmethod
    def create(cls, slots: int, stripes: int = 64) -> SharedNonces:
        """A new, zeroed table (in the parent, before the workers start)."""
        _check_slots(slots)
        memory = SharedMemory(create=True, size=table_bytes(slots))  # zero-filled (a new mmap)
        _commit(memory)
        context = get_context("spawn")
        return cls(memory, [context.Lock() for _ in range(stripes)], secrets.token_bytes(32),
                   owner=True)

    @classmethod
    def in_process(cls, slots: int) -> SharedNonces:
        """A table in this process's memory only, for a gate that serves from one process: its
        pages are private, so nothing outside this process reads or writes its nonces."""
        _check_slots(slots)
        # anonymous and zeroed, its pages made now (as ``create`` commits the shared block's):
        # otherwise a request's take pays two page faults the first time its bucket is touched
        pages = mmap.mmap(-1, table_bytes(slots),
                          flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0))
        return cls(pages, [threading.Lock()], secrets.token_bytes(32), owner=False)

    def handle(self) -> Handle:
        """What a worker needs to ``attach`` (picklable into a spawned process)."""
        if not isinstance(self._memory, SharedMemory):
            raise ValueError("an in-process replay table cannot be shared")
        return self._memory.name, self._locks, self._hash_key

    @classmethod
    def attach(cls, handle: Handle) -> SharedNonces:
        name, locks, hash_key = handle
        memory = SharedMemory(name=name)
        # The creator owns the block; a worker that attaches must not have the resource tracker
        # unlink it when the worker exits (Python < 3.13 registers every attach).
        resource_tracker.unregister(memory._name, "shared_memory")  # type: ignore[attr-defined]
        return cls(memory, locks, hash_key, owner=False)

    def close(self) -> None:
        self._buffer.release()
        self._memory.close()
        if self._owner and isinstance(self._memory, SharedMemory):
            self._memory.unlink()

    def take(self, ts: int, nonce: str, now: float) -> str | None:
        """None the first time ``nonce`` (32 hex digits, as the assertion's pattern admits) is
        seen in the window, else why it is refused: ``replayed`` or ``replay_table_full``."""
        raw = bytes.fromhex(nonce)
        digest = hashlib.blake2b(raw, key=self._hash_key, digest_size=8).digest()
        bucket = int.from_bytes(digest, "little") % self.buckets
        start = bucket * _BUCKET_BYTES
        expiries_at = start + _KEYS_BYTES
        buffer = self._buffer
        with self._locks[bucket % len(self._locks)]:
            expiries = _EXPIRIES.unpack_from(buffer, expiries_at)
            keys = bytes(buffer[start:expiries_at])
            at = keys.find(raw)
            while at >= 0:  # a match across two slots is no match: go on from the next slot
                if at % _NONCE == 0 and expiries[at // _NONCE] >= now:
                    return REPLAYED
                at = keys.find(raw, at // _NONCE * _NONCE + _NONCE)
            soonest = min(expiries)
            if soonest >= now:
                self._note_full(now)
                return REPLAY_TABLE_FULL
            i = expiries.index(soonest)
            buffer[start + i * _NONCE:start + (i + 1) * _NONCE] = raw
            _EXPIRY.pack_into(buffer, expiries_at + i * 8, ts + MAX_SKEW_S + GRACE_S)
        return None

    def _note_full(self, now: float) -> None:
        self.full += 1
        if now - self._full_logged_at >= 60:  # a caller filling it must not flood the log too
            self._full_logged_at = now
            log.warning("the replay table is full (%d slots, %d refusals here so far): "
                        "new caller assertions are refused until nonces expire; size it with "
                        "--max-request-rate", self.slots, self.full)

    def live(self, now: float | None = None) -> int:
        """How many nonces the table holds in the window (a scan: for tests and tools)."""
        at = time.time() if now is None else now
        return sum(sum(e >= at for e in _EXPIRIES.unpack_from(
            self._buffer, b * _BUCKET_BYTES + _KEYS_BYTES)) for b in range(self.buckets))
