"""The account directory of each region: which accounts are homed there (``core.homes``).

A region's directory is a NATS KV bucket (``sg_<region>_homes``), one key per account homed in
the region (:func:`core.homes.directory_key`, a digest: the bucket names no account), valued
with its :class:`HomeEntry`. It holds only the region's own accounts; nothing about them is
written anywhere else. A gate asks its own directory first, then each peer's, reading one key
(the peers' buckets are readable by key only: ``$JS.API.DIRECT.GET``, no listing, no
consumer). Claims are KV creates, so of two gates of one region only one claims an account, and
a gate claims only after winning the account's key in the global home register
(``bus.home_claims``), so of two regions only one does; operators set and move entries
(``safeguards ops home``, ``migrate-home``) and note them in the register.
"""

from __future__ import annotations

import logging

import anyio
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import open_bucket
from safeguards.core.homes import (
    HomeEntry,
    MalformedHomeEntry,
    decode_entry,
    directory_key,
    encode_entry,
)
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)

OP_TIMEOUT_S = 2.0
TRANSPORT_ERRORS = (TimeoutError, OSError, nats.errors.Error)
_WRONG_LAST = (10071, 10164)  # the server's "wrong last sequence" codes: a create that lost
_LOST_CREATE = (KeyWrongLastSequenceError, KeyNotFoundError, KeyDeletedError)


async def create_entry(kv: KeyValue, key: str, entry: HomeEntry, what: str) -> bool:
    """Create ``key`` with ``entry`` unless it exists: True when this create won, False when
    another claim holds the key (the caller reads the entry that won). ``what`` names the
    operation in a BusUnavailable."""
    try:
        with anyio.fail_after(OP_TIMEOUT_S):
            await kv.create(key, encode_entry(entry))
    except _LOST_CREATE:
        return False
    except APIError as exc:
        if getattr(exc, "err_code", None) in _WRONG_LAST:
            return False
        raise BusUnavailable(f"{what}: {exc.description}") from None
    except TRANSPORT_ERRORS as exc:
        raise BusUnavailable(f"{what}: {type(exc).__name__}") from None
    return True


async def entry_bytes(kv: KeyValue, key: str, what: str) -> bytes | None:
    """What ``key`` holds (None: nothing, or deleted)."""
    try:
        with anyio.fail_after(OP_TIMEOUT_S):
            found = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    except TRANSPORT_ERRORS as exc:
        raise BusUnavailable(f"{what}: {type(exc).__name__}") from None
    value: bytes | None = found.value
    return value


async def put_entry(kv: KeyValue, key: str, entry: HomeEntry, what: str) -> None:
    """Set ``key`` to ``entry`` whatever it held."""
    try:
        with anyio.fail_after(OP_TIMEOUT_S):
            await kv.put(key, encode_entry(entry))
    except (APIError, *TRANSPORT_ERRORS) as exc:
        raise BusUnavailable(f"{what}: {type(exc).__name__}") from None
_DELETED = ("DEL", "PURGE")


def home_bucket_name(region: str) -> str:
    return f"sg_{validate_region(region)}_homes"


class HomeDirectory:
    """One region's directory, and key reads of its peers'."""

    def __init__(self, js: JetStreamContext, region: str, kv: KeyValue,
                 peers: tuple[str, ...] = ()) -> None:
        self.js = js
        self.region = validate_region(region)
        self.peers = tuple(validate_region(p) for p in peers if p != region)
        self._kv = kv
        self.malformed = 0  # entries found that this build cannot read (counted, skipped)

    @classmethod
    async def open(cls, js: JetStreamContext, region: str,
                   peers: tuple[str, ...] = ()) -> HomeDirectory:
        kv = await open_bucket(js, home_bucket_name(region), history=5, direct=True,
                               description=f"accounts homed in {region}")
        return cls(js, region, kv, peers)

    async def local(self, account_id: str) -> HomeEntry | None:
        """This region's entry for the account (None: not homed here by this directory)."""
        return self._entry(await entry_bytes(self._kv, directory_key(account_id),
                                             "home directory read"))

    async def peer(self, region: str, account_id: str) -> HomeEntry | None:
        """``region``'s entry for the account, read by its key alone."""
        bucket = home_bucket_name(region)
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                msg = await self.js.get_last_msg(f"KV_{bucket}",
                                                 f"$KV.{bucket}.{directory_key(account_id)}",
                                                 direct=True)
        except (NotFoundError, nats.errors.NoRespondersError):
            return None  # no entry, or the peer has no directory yet
        except APIError as exc:
            raise BusUnavailable(f"home directory of {region}: {exc.description}") from None
        except TRANSPORT_ERRORS as exc:
            raise BusUnavailable(f"home directory of {region}: {type(exc).__name__}") from None
        if (msg.headers or {}).get("KV-Operation") in _DELETED:
            return None
        return self._entry(msg.data)

    async def lookup(self, account_id: str) -> HomeEntry | None:
        """The account's home as the directories say: this region's, else the first peer's
        that holds it; None where none does."""
        found = await self.local(account_id)
        if found is not None:
            return found
        for region in self.peers:
            entry = await self.peer(region, account_id)
            if entry is not None and entry.home == region:
                return entry
        return None

    async def claim(self, account_id: str, entry: HomeEntry) -> HomeEntry:
        """Write ``entry`` only if this directory holds none for the account; what it holds
        afterwards (ours, or the entry that won)."""
        if await create_entry(self._kv, directory_key(account_id), entry, "home claim"):
            return entry
        held = await self.local(account_id)
        return held if held is not None else entry

    async def put(self, account_id: str, entry: HomeEntry) -> None:
        """Set the entry whatever it held (operators: onboarding, migration)."""
        await put_entry(self._kv, directory_key(account_id), entry, "home put")

    async def remove(self, account_id: str) -> None:
        """Drop the account from this directory (it moved away); the bucket's history keeps
        what it held."""
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                await self._kv.delete(directory_key(account_id))
        except (APIError, *TRANSPORT_ERRORS) as exc:
            raise BusUnavailable(f"home remove: {type(exc).__name__}") from None

    def _entry(self, data: bytes | None) -> HomeEntry | None:
        if data is None:
            return None
        try:
            return decode_entry(data)
        except MalformedHomeEntry:
            self.malformed += 1
            log.error("home directory of %s: an entry this build cannot read (skipped)",
                      self.region)
            return None
