"""``core.ports.FieldSealer``: a region's per-account data keys, in memory and in PostgreSQL's
``account_keys`` table (the one the event stores seal events' personal fields with; see
``sealing.py``). Both pass ``tests/store/test_store_erasure.py``'s contract."""

from __future__ import annotations

import os
from typing import Any

from safeguards.adapters.store.sealing import DataKey, Sealing, load_data_master_key
from safeguards.core.ids import validate_account_id, validate_region

_INSERT = ("INSERT INTO account_keys (account_id, generation, wrapped) VALUES ($1, $2, $3) "
           "ON CONFLICT (account_id) DO NOTHING")
_SELECT = "SELECT generation, wrapped FROM account_keys WHERE account_id = $1"
_DELETE = "DELETE FROM account_keys WHERE account_id = $1 RETURNING 1"


class InMemoryFieldSealer:
    def __init__(self, region: str, master_key: bytes | None = None) -> None:
        self._sealing = Sealing(validate_region(region), master_key or os.urandom(32))
        self._keys: dict[str, DataKey] = {}

    async def seal(self, account_id: str, label: str, plaintext: bytes) -> bytes:
        key = self._keys.get(validate_account_id(account_id))
        if key is None:
            key = self._keys[account_id] = self._sealing.new_key(account_id)[0]
        return self._sealing.seal(account_id, key, label, plaintext)

    async def open(self, account_id: str, label: str, sealed: bytes) -> bytes | None:
        return self._sealing.open(account_id, self._keys.get(account_id), label, sealed)

    async def erase(self, account_id: str) -> int:
        self._sealing.forget(account_id)
        return int(self._keys.pop(account_id, None) is not None)


class PostgresFieldSealer:
    """The keys of a region's PostgreSQL store (``store``: a ``PostgresEventStore``, whose
    connections, region check and deadlines it uses)."""

    def __init__(self, store: Any, master_key: bytes | None = None) -> None:
        self._store = store
        self._sealing = Sealing(store.region, master_key or load_data_master_key(store.region))

    async def _key(self, account_id: str, *, create: bool) -> DataKey | None:
        validate_account_id(account_id)
        async with self._store._connect() as conn:
            driver = await self._store._driver(conn)
            row = await driver.fetchrow(_SELECT, account_id)
            if row is None and create:
                key, wrapped = self._sealing.new_key(account_id)
                await driver.execute(_INSERT, account_id, key.generation, wrapped)
                row = await driver.fetchrow(_SELECT, account_id)  # another writer may have won
            if row is None:
                return None
            return self._sealing.unwrap(account_id, row[0], bytes(row[1]))

    async def seal(self, account_id: str, label: str, plaintext: bytes) -> bytes:
        key = await self._key(account_id, create=True)
        assert key is not None
        return self._sealing.seal(account_id, key, label, plaintext)

    async def open(self, account_id: str, label: str, sealed: bytes) -> bytes | None:
        return self._sealing.open(account_id, await self._key(account_id, create=False), label,
                                  sealed)

    async def erase(self, account_id: str) -> int:
        validate_account_id(account_id)
        self._sealing.forget(account_id)
        async with self._store._connect() as conn:
            driver = await self._store._driver(conn)
            return len(await driver.fetch(_DELETE, account_id))
