"""Pseudonymous cross-region signals on NATS (``core.cross_signals``).

The global board is a KV bucket, ``sg_global_signals``, whose keys are ``<origin>.<pseudonym>``
and whose values are aggregates; entries expire after two epochs. A region's classifier
(:class:`CrossSignalPublisher`) counts, per epoch and pseudonym, the distinct accounts whose
prompt it flagged (held as keyed digests, in memory) and, at ``K_MIN``, writes the aggregate
under its own region's keys: the server lets a region's classifier write only
``$KV.sg_global_signals.<region>.>`` (``bus.nats_auth``), so no region speaks for another, and
nothing but the aggregate (no account id, no text) is ever written. Each entry is signed for
every peer with the key the region forwards to that peer with (``producer_auth``,
``forward_<origin>-<peer>.keys``; the MAC binds the entry's KV subject, so it is good for that
key only and never as a forwarded signal). Each gate (:class:`CrossSignalBoard`) watches the
bucket, takes only well-formed aggregates of other origins whose key names their origin and
whose MAC for its own region holds under that origin's key, and refuses a request whose newest
user turn has a released pseudonym of the current or previous epoch. An unsigned or forged entry
(whoever holds a region's write permission on the board but not its keys) is counted
(``forged``), logged without its content, and ignored.

A release the board did not take (bus down, bucket full) is kept, bounded, and tried again with
a doubling backoff whenever the classifier next observes a score, up to ``RETRY_LIMIT`` times;
then it is counted as abandoned (the pseudonym's entry would expire with its epoch anyway).

The shared secret the epoch keys derive from: ``SAFEGUARDS_CROSS_KEYS_GLOBAL`` where set, else
``<state>/cross-global.keys`` (made on first use in the embedded default; every region must
hold the same). Counting is per classifier process: with several in a region a pseudonym is
released later, never sooner. With a NATS cluster per region there is no shared bucket yet.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError
from nats.js.kv import KeyValue

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import open_bucket
from safeguards.adapters.bus.producer_auth import PRODUCER_HEADER, ProducerKeys
from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.content import ContentItem
from safeguards.core.cross_signals import (
    EPOCH_S,
    CrossRegionAggregate,
    DistinctAccounts,
    MalformedAggregate,
    board_entry,
    decode_aggregate,
    encode_aggregate,
    epoch_key,
    epoch_of,
    keyed_pseudonym,
    pseudonym,
    split_board_entry,
)
from safeguards.core.events import Scores
from safeguards.core.ids import validate_region
from safeguards.core.policy import Policy
from safeguards.core.prompt_links import normalise_prompt

log = logging.getLogger(__name__)

GLOBAL_BUCKET = "sg_global_signals"
OP_TIMEOUT_S = 2.0
DEFAULT_THRESHOLD = 0.9  # a prompt counts only where the classifier is confident (no policy)
RETRY_LIMIT = 5  # attempts at one release before it is abandoned
RETRY_BASE_S, RETRY_CAP_S = 1.0, 60.0  # backoff after the first failure, doubling, capped
RETRIES_PER_OBSERVATION = 4  # releases retried at most per score observed (each up to 2 s)
PENDING_MAX = 1024  # releases held for a retry; the oldest is abandoned past it


def entry_subject(key: str) -> str:
    """The board entry's KV subject, which its MACs bind."""
    return f"$KV.{GLOBAL_BUCKET}.{key}"


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


@dataclass(slots=True)
class _Pending:
    aggregate: CrossRegionAggregate
    attempts: int
    due: float


class CrossSignalPublisher:
    """The classifier's side: count flagged prompts, release signed aggregates at k."""

    def __init__(self, js: JetStreamContext, region: str, secret: bytes, account_key: bytes, *,
                 signers: Mapping[str, ProducerKeys],
                 thresholds: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``signers``: per peer region, the key this region forwards to it with (each entry
        carries one MAC per peer; a peer takes only its own). ``thresholds``: per category, the
        score from which a prompt counts as flagged (the region's policy's refuse thresholds,
        ``refuse_thresholds``: high confidence; a category not named, e.g. switched off, never
        counts); None: ``DEFAULT_THRESHOLD`` for every category."""
        self.js = js
        self.region = validate_region(region)
        self.signers = {validate_region(p): k for p, k in signers.items() if p != self.region}
        if not self.signers:
            raise ValueError("cross-region aggregates need at least one peer to sign for")
        self.thresholds = thresholds
        self.clock = clock
        self._keys = _EpochKeys(secret)
        self._account_key = account_key
        self._counts = DistinctAccounts()
        self._kv: KeyValue | None = None
        self._pending: OrderedDict[tuple[int, str], _Pending] = OrderedDict()
        self.released = 0
        self.failures = 0  # attempts the board did not take (counted, logged, retried)
        self.abandoned = 0  # releases given up after RETRY_LIMIT attempts, or stale

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def observe(self, item: ContentItem, scores: Scores) -> None:
        """One scored content item; never raises for the bus (the scores matter more)."""
        if self._pending:
            await self.retry_due()
        if item.kind != "prompt":
            return
        limits = self.thresholds
        flagged = [(s, c) for c, s in scores
                   if s >= (DEFAULT_THRESHOLD if limits is None else limits.get(c, math.inf))]
        if not flagged:
            return
        epoch = epoch_of(self.clock())
        name = pseudonym(self._keys(epoch), item.text)
        if name is None:
            return
        digest = hmac.new(self._account_key, item.account_id.encode(), hashlib.sha256)
        count = self._counts.add(epoch, name, digest.hexdigest()[:32])
        if count is not None:
            await self._release(CrossRegionAggregate(self.region, epoch, name, max(flagged)[1],
                                                     count), attempts=0)

    async def retry_due(self) -> None:
        """Try again the held releases whose backoff has passed (a few; stop at a failure)."""
        now = self.clock()
        current = epoch_of(now)
        due = [p for p in self._pending.values() if p.due <= now][:RETRIES_PER_OBSERVATION]
        for held in due:
            if held.aggregate.epoch < current - 1:  # no gate takes it any more
                del self._pending[(held.aggregate.epoch, held.aggregate.pseudonym)]
                self.abandoned += 1
                continue
            if not await self._release(held.aggregate, attempts=held.attempts):
                return

    async def _release(self, aggregate: CrossRegionAggregate, *, attempts: int) -> bool:
        key = f"{self.region}.{aggregate.pseudonym}"
        data = encode_aggregate(aggregate)
        subject = entry_subject(key)
        macs = {peer: signer.headers(subject, data)[PRODUCER_HEADER]
                for peer, signer in self.signers.items()}
        pending_key = (aggregate.epoch, aggregate.pseudonym)
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                if self._kv is None:
                    self._kv = await open_global_board(self.js)
                await self._kv.put(key, board_entry(data, macs))
        except (BusUnavailable, TimeoutError, OSError, nats.errors.Error, APIError) as exc:
            self.failures += 1
            self._pending.pop(pending_key, None)
            attempts += 1
            if attempts >= RETRY_LIMIT:
                self.abandoned += 1
                log.error("cross-region aggregate abandoned after %d attempts: %s", attempts,
                          type(exc).__name__)
                return False
            log.warning("cross-region aggregate not released (attempt %d): %s; retried later",
                        attempts, type(exc).__name__)
            backoff = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempts - 1))
            self._pending[pending_key] = _Pending(aggregate, attempts, self.clock() + backoff)
            if len(self._pending) > PENDING_MAX:
                self._pending.popitem(last=False)
                self.abandoned += 1
            return False
        self._pending.pop(pending_key, None)
        self.released += 1
        return True


class CrossSignalBoard:
    """The gate's side: the released pseudonyms of other regions, current and previous epoch."""

    def __init__(self, js_of: Callable[[], JetStreamContext | None], region: str, secret: bytes,
                 *, origins: Mapping[str, ProducerKeys],
                 clock: Callable[[], float] = time.time, retry_s: float = 2.0) -> None:
        """``origins``: per peer region, the key it forwards to this region with (what its
        entries' MACs for this region are made under)."""
        self.js_of = js_of
        self.region = validate_region(region)
        self.origins = dict(origins)
        self.clock = clock
        self.retry_s = retry_s
        self._keys = _EpochKeys(secret)
        self._released: dict[tuple[int, str], CrossRegionAggregate] = {}
        self.rejected = 0  # entries refused by the residency guard (counted, logged)
        self.forged = 0  # entries unsigned or not signed by their origin (counted, logged)
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
        well-formed under its own key and signed it for this region."""
        origin, _, _ = key.partition(".")
        if origin == self.region:
            return None
        try:
            data, macs = split_board_entry(value)
        except MalformedAggregate as exc:
            self.rejected += 1
            log.error("cross-region board: ALARM entry refused (%s)", exc)
            return None
        why = self._forgery(origin, key, data, macs.get(self.region))
        if why is not None:
            self.forged += 1
            log.error("cross-region board: ALARM entry ignored (%s)", why)
            return None
        try:
            aggregate = decode_aggregate(data, origin=origin)
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

    def _forgery(self, origin: str, key: str, data: bytes, mac: str | None) -> str | None:
        """None when ``origin``'s forwarding key made this entry's MAC for this region."""
        keys = self.origins.get(origin)
        if keys is None:
            return "origin_not_a_peer"
        if mac is None:
            return "unsigned"
        return keys.problem(entry_subject(key), data, {PRODUCER_HEADER: mac})

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


def refuse_thresholds(policy: Policy) -> dict[str, float]:
    """Each enabled category's refuse threshold: where the region's gates refuse a request on
    its own score, the confidence a prompt needs before it counts towards a release."""
    return {c.name: c.refuse_threshold for c in policy.enabled_categories}
