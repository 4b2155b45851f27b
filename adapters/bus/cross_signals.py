"""Pseudonymous cross-region signals on NATS (``core.cross_signals``).

The global board is a KV bucket, ``sg_global_signals``, whose keys are ``<origin>.<pseudonym>``
and whose values are aggregates; entries expire after two epochs. A region's classifier
(:class:`CrossSignalPublisher`) counts, per epoch and pseudonym, the distinct accounts whose
prompt it flagged (held as keyed digests, in memory) and, at ``K_MIN``, writes the aggregate
under its own region's keys: the server lets a region's classifier write only
``$KV.sg_global_signals.<region>.>`` (``bus.nats_auth``), so no region speaks for another, and
nothing but the aggregate (no account id, no text) is ever written. Each gate
(:class:`CrossSignalBoard`) watches the bucket, takes only well-formed aggregates of other
origins whose key names their origin, and refuses a request whose newest user turn has a
released pseudonym of the current or previous epoch.

The shared secret the epoch keys derive from: ``SAFEGUARDS_CROSS_KEYS_GLOBAL`` where set, else
``<state>/cross-global.keys`` (made on first use in the embedded default; every region must
hold the same). Counting is per classifier process: with several in a region a pseudonym is
released later, never sooner. With a NATS cluster per region there is no shared bucket yet.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError
from nats.js.kv import KeyValue

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import open_bucket
from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.content import ContentItem
from safeguards.core.cross_signals import (
    EPOCH_S,
    CrossRegionAggregate,
    DistinctAccounts,
    MalformedAggregate,
    decode_aggregate,
    encode_aggregate,
    epoch_key,
    epoch_of,
    keyed_pseudonym,
    pseudonym,
)
from safeguards.core.events import Scores
from safeguards.core.ids import validate_region
from safeguards.core.prompt_links import normalise_prompt

log = logging.getLogger(__name__)

GLOBAL_BUCKET = "sg_global_signals"
OP_TIMEOUT_S = 2.0
DEFAULT_THRESHOLD = 0.9  # a prompt counts only where the classifier is confident


def load_cross_secret(directory: Any = None) -> bytes:
    return shared_secrets("global", "cross", id_prefix="x", directory=directory,
                          what="the regions' shared cross-region pseudonym secret")[0][1]


async def open_global_board(js: JetStreamContext) -> KeyValue:
    return await open_bucket(js, GLOBAL_BUCKET, history=1, ttl=2 * EPOCH_S, direct=True,
                             description="cross-region aggregates (pseudonyms, k-anonymous)")


class _EpochKeys:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._keys: dict[int, bytes] = {}

    def __call__(self, epoch: int) -> bytes:
        key = self._keys.get(epoch)
        if key is None:
            if len(self._keys) > 4:
                self._keys.clear()
            key = self._keys[epoch] = epoch_key(self._secret, epoch)
        return key


class CrossSignalPublisher:
    """The classifier's side: count flagged prompts, release aggregates at k."""

    def __init__(self, js: JetStreamContext, region: str, secret: bytes, account_key: bytes, *,
                 threshold: float = DEFAULT_THRESHOLD,
                 clock: Callable[[], float] = time.time) -> None:
        self.js = js
        self.region = validate_region(region)
        self.threshold = threshold
        self.clock = clock
        self._keys = _EpochKeys(secret)
        self._account_key = account_key
        self._counts = DistinctAccounts()
        self._kv: KeyValue | None = None
        self.released = 0
        self.failures = 0  # releases not written (counted, logged; a later flag retries none)

    async def observe(self, item: ContentItem, scores: Scores) -> None:
        """One scored content item; never raises for the bus (the scores matter more)."""
        if item.kind != "prompt":
            return
        flagged = [(s, c) for c, s in scores if s >= self.threshold]
        if not flagged:
            return
        epoch = epoch_of(self.clock())
        name = pseudonym(self._keys(epoch), item.text)
        if name is None:
            return
        digest = hmac.new(self._account_key, item.account_id.encode(), hashlib.sha256)
        count = self._counts.add(epoch, name, digest.hexdigest()[:32])
        if count is None:
            return
        aggregate = CrossRegionAggregate(self.region, epoch, name, max(flagged)[1], count)
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                if self._kv is None:
                    self._kv = await open_global_board(self.js)
                await self._kv.put(f"{self.region}.{name}", encode_aggregate(aggregate))
        except (BusUnavailable, TimeoutError, OSError, nats.errors.Error, APIError) as exc:
            self.failures += 1
            log.warning("cross-region aggregate not released: %s", type(exc).__name__)
            return
        self.released += 1


class CrossSignalBoard:
    """The gate's side: the released pseudonyms of other regions, current and previous epoch."""

    def __init__(self, js_of: Callable[[], JetStreamContext | None], region: str, secret: bytes,
                 *, clock: Callable[[], float] = time.time, retry_s: float = 2.0) -> None:
        self.js_of = js_of
        self.region = validate_region(region)
        self.clock = clock
        self.retry_s = retry_s
        self._keys = _EpochKeys(secret)
        self._released: dict[tuple[int, str], CrossRegionAggregate] = {}
        self.rejected = 0  # entries refused by the residency guard (counted, logged)
        self.refused = 0  # requests refused on a released pseudonym

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self._follow()
            except (BusUnavailable, BucketNotFoundError, TimeoutError, OSError,
                    nats.errors.Error, APIError) as exc:
                log.debug("cross-region board: %s; again shortly", type(exc).__name__)
            await anyio.sleep(self.retry_s)

    async def _follow(self) -> None:
        js = self.js_of()
        if js is None:
            raise BusUnavailable("not connected")
        with anyio.fail_after(OP_TIMEOUT_S):
            kv = await js.key_value(GLOBAL_BUCKET)
            watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue
                self.take(entry.key, entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    def take(self, key: str, value: bytes) -> CrossRegionAggregate | None:
        """One board entry through the residency guard: kept when another region released it
        well-formed under its own key."""
        origin, _, _ = key.partition(".")
        if origin == self.region:
            return None
        try:
            aggregate = decode_aggregate(value, origin=origin)
        except MalformedAggregate as exc:
            self.rejected += 1
            log.error("cross-region board: ALARM entry refused (%s)", exc)
            return None
        current = epoch_of(self.clock())
        for stale in [k for k in self._released if k[0] < current - 1]:
            del self._released[stale]
        if aggregate.epoch >= current - 1:
            self._released[(aggregate.epoch, aggregate.pseudonym)] = aggregate
        return aggregate

    def released(self, text: str) -> CrossRegionAggregate | None:
        """The aggregate another region released for this prompt, if any (two HMACs, and none
        at all while nothing is released)."""
        if not self._released:
            return None
        normalised = normalise_prompt(text)  # once, for both epochs' keys
        if not normalised:
            return None
        current = epoch_of(self.clock())
        for epoch in (current, current - 1):
            found = self._released.get((epoch, keyed_pseudonym(self._keys(epoch), normalised)))
            if found is not None:
                return found
        return None
