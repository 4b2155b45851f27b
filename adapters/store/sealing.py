"""Crypto-shredding (``core.erasure``): per-account data keys and the sealed fields of bodies.

Each account whose events carry personal values gets a random 256-bit data key, stored in the
region's ``account_keys`` table wrapped (AES-GCM) under the region's data master key, which, like
the chain key, stays with the application (``SAFEGUARDS_DATA_KEYS_<REGION>`` or
``$SAFEGUARDS_STATE_DIR/data-<region>.keys``): the database alone opens nothing. A key has a
random generation; erasure deletes the account's row, and the next event with personal values
gets a new key of another generation.

A stored body keeps its public fields in the codec's map and its personal ones (those set) in one
entry, ``"~s"``: ``format (1) || generation (4) || nonce (12) || AES-GCM(msgpack of the fields)``,
with associated data binding the region, the account and ``core.erasure.seal_label`` (type and
field names). One seal per event, a fresh random nonce each. The chain covers these stored
bytes, so it verifies before and after the key is gone.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core import codec
from safeguards.core.erasure import (
    PERSONAL_FIELDS,
    SEALED_KEY,
    erased_fields,
    personal_fields,
    seal_label,
)
from safeguards.core.errors import SealBroken
from safeguards.core.events import EVENT_TYPES, EventBody
from safeguards.core.upcasters import upcast

_FORMAT = b"\x01"
_HEADER = 1 + 4 + 12
_MARK = b"\xa2~s"  # msgpack of the key "~s": a stored body that holds sealed fields has it
KEYS_FOR = ("SELECT account_id, generation, wrapped FROM account_keys "
            "WHERE account_id = ANY($1::text[])")


def load_data_master_key(region: str, directory: Path | None = None) -> bytes:
    """The key the region's data keys are wrapped under."""
    return shared_secrets(region, "data", id_prefix="d", directory=directory,
                          what=f"the {region} region's data master key")[0][1]


@dataclass(frozen=True, slots=True)
class DataKey:
    generation: int
    aead: AESGCM


def might_be_sealed(stored: bytes) -> bool:
    """Cheap pre-check on a stored body: False means it certainly holds no sealed fields."""
    return _MARK in stored


class Sealing:
    """A region's data keys (made, wrapped, unwrapped with a bounded cache) and AES-GCM over
    values bound to an account and a label."""

    def __init__(self, region: str, master_key: bytes, *, cache: int = 50_000) -> None:
        self._region = region.encode("ascii")
        self._master = AESGCM(master_key)
        self._cache: OrderedDict[tuple[str, int, bytes], DataKey] = OrderedDict()
        self._cache_size = cache

    def _wrap_ad(self, account: str, generation: int) -> bytes:
        return b"\x1f".join((b"sg-data-key-v1", self._region, account.encode("utf-8"),
                             str(generation).encode("ascii")))

    def new_key(self, account: str) -> tuple[DataKey, bytes]:
        """A fresh data key for ``account`` and its wrapped form (for the key table)."""
        generation = int.from_bytes(os.urandom(4), "big") & 0x7FFF_FFFF or 1
        secret, nonce = os.urandom(32), os.urandom(12)
        wrapped = nonce + self._master.encrypt(nonce, secret, self._wrap_ad(account, generation))
        key = DataKey(generation, AESGCM(secret))
        self._keep((account, generation, wrapped), key)
        return key, wrapped

    def unwrap(self, account: str, generation: int, wrapped: bytes) -> DataKey:
        entry = (account, generation, wrapped)
        key = self._cache.get(entry)
        if key is None:
            try:
                secret = self._master.decrypt(wrapped[:12], wrapped[12:],
                                              self._wrap_ad(account, generation))
            except InvalidTag:
                raise SealBroken("a data key did not unwrap under the region's master key") \
                    from None
            key = DataKey(generation, AESGCM(secret))
            self._keep(entry, key)
        return key

    def _keep(self, entry: tuple[str, int, bytes], key: DataKey) -> None:
        self._cache[entry] = key
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def forget(self, account: str) -> None:
        """Drop this process's copies of an erased account's keys."""
        for entry in [e for e in self._cache if e[0] == account]:
            del self._cache[entry]

    def _ad(self, account: str, label: str) -> bytes:
        return b"\x1f".join((b"sg-seal-v1", self._region, account.encode("utf-8"),
                             label.encode("utf-8")))

    def seal(self, account: str, key: DataKey, label: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return b"".join((_FORMAT, key.generation.to_bytes(4, "big"), nonce,
                         key.aead.encrypt(nonce, plaintext, self._ad(account, label))))

    def open(self, account: str, key: DataKey | None, label: str, sealed: bytes) -> bytes | None:
        """The plaintext, or None when ``key`` (the account's live key, if any) is not the one
        it was sealed under: that key was destroyed."""
        if len(sealed) < _HEADER + 16 or sealed[:1] != _FORMAT:
            raise SealBroken("a sealed value is malformed")
        if key is None or int.from_bytes(sealed[1:5], "big") != key.generation:
            return None
        try:
            return key.aead.decrypt(sealed[5:17], sealed[17:], self._ad(account, label))
        except InvalidTag:
            raise SealBroken("a sealed value did not open: altered, or not this account's or "
                             "field's") from None


# --- event bodies ---------------------------------------------------------------------------------


def needs_key(body: EventBody) -> bool:
    """Whether an event of this body's type may carry personal fields (and so a key)."""
    return body.TYPE in PERSONAL_FIELDS


def seal_map(sealing: Sealing, account: str, key: DataKey, type_name: str,
             body: dict[str, Any]) -> dict[str, Any]:
    """The encoded body with its personal fields (those set) sealed into ``"~s"``."""
    names = personal_fields(type_name, body)
    if not names:
        return body
    secret = {n: body.pop(n) for n in names}
    body[SEALED_KEY] = sealing.seal(account, key, seal_label(type_name, names),
                                    msgpack.packb(secret, use_bin_type=True))
    return body


def open_body(sealing: Sealing, type_name: str, schema_version: int, stored: bytes,
              account: str, event_id: str, key: DataKey | None) -> EventBody:
    """A stored body decoded, its sealed fields opened, or erased where the key is gone."""
    if not might_be_sealed(stored):
        return codec.unpack_body(type_name, schema_version, stored)
    body = msgpack.unpackb(stored, raw=False, strict_map_key=True)
    if not isinstance(body, dict) or SEALED_KEY not in body:
        return codec.unpack_body(type_name, schema_version, stored)
    sealed = body.pop(SEALED_KEY)
    if not isinstance(sealed, bytes):
        raise SealBroken("a sealed value is malformed")
    # lifted to this build's schema first: a personal field that the stored version predates is
    # then present (its upcaster's value), not taken for one its writer sealed
    body = upcast(type_name, schema_version, body)
    schema_version = EVENT_TYPES[type_name].SCHEMA_VERSION
    names = tuple(n for n in PERSONAL_FIELDS.get(type_name, ()) if n not in body)
    opened = sealing.open(account, key, seal_label(type_name, names), sealed)
    if opened is None:
        body = erased_fields(type_name, body, event_id)
    else:
        fields = msgpack.unpackb(opened, raw=False, strict_map_key=True)
        if not isinstance(fields, dict):
            raise SealBroken("a sealed value is malformed")
        body.update(fields)
    return codec.decode_body(type_name, schema_version, body)

