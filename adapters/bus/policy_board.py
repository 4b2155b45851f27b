"""The region's policy board: the policy in force, in a NATS KV bucket every part reads.

The region's policy history (``policy:<region>`` in its event store) is the record; the board
is how the newest ``PolicyChanged`` of that history reaches every process of the region. Actor
nodes publish to it (``PolicyPublisher``); actor nodes, proxies and ext_proc servers follow it
(``follow_policy``): a follower watches the board's key and reads it again when it changes (and
at least every ``RECHECK_S`` should a change notice be lost), so a new document applies within
milliseconds and an idle follower costs nothing (polling four times a second was 6.5 % of an
idle proxy's CPU samples). A write names the history
version it comes from and is a compare-and-set on the key's revision, so an older document never
replaces a newer one, whichever node writes last. A document that does not validate is refused
by readers (counted and logged), never applied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import msgpack
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import open_bucket
from safeguards.core.errors import PolicyError, SafeguardsError
from safeguards.core.events import PolicyChanged
from safeguards.core.ids import policy_entity, validate_region
from safeguards.core.policy import Policy, parse_policy
from safeguards.core.ports import EventStore

log = logging.getLogger(__name__)

KEY = "current"
OP_TIMEOUT_S = 3.0
RECHECK_S = 5.0  # a follower reads the board at least this often, change notices or not
_TRANSPORT = (TimeoutError, nats.errors.Error, APIError)


def policy_bucket_name(region: str) -> str:
    return f"sg_{validate_region(region)}_policy"


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    history_version: int  # the version of the PolicyChanged event in policy:<region>
    policy_version: str
    sha256: str
    document: str

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb([self.history_version, self.policy_version, self.sha256,
                                       self.document], use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, data: bytes) -> PublishedPolicy:
        try:
            version, policy_version, digest, document = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise PolicyError(f"policy board entry is not readable: {type(exc).__name__}") from None
        if not (isinstance(version, int) and isinstance(policy_version, str)
                and isinstance(digest, str) and isinstance(document, str)):
            raise PolicyError("policy board entry has the wrong shape")
        return cls(version, policy_version, digest, document)


class Board(Protocol):
    """What publishers and followers need of a board (``PolicyBoard`` on NATS KV, the in-memory
    twin's in ``memory.py``)."""

    async def read(self) -> tuple[PublishedPolicy | None, int]: ...

    async def publish(self, policy: PublishedPolicy) -> bool: ...

    async def wait_change(self, timeout_s: float) -> None:
        """Return when the board may have changed since the last call, or after ``timeout_s``
        (a spurious return is harmless: the caller reads again)."""
        ...


class PolicyBoard:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._watcher: KeyValue.KeyWatcher | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, region: str, *,
                   provision: bool = True) -> PolicyBoard:
        """``provision``: False for a role that may only read the board (a gate, an operator):
        the nodes create it and raise its replicas."""
        return cls(await open_bucket(js, policy_bucket_name(region), provision=provision,
                                     history=8, description="the region's policy"))

    async def read(self) -> tuple[PublishedPolicy | None, int]:
        """The published policy (None: nothing published yet) and the key's revision (0)."""
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                entry = await self._kv.get(KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None, 0
        except _TRANSPORT as exc:
            raise BusUnavailable(f"reading the policy board: {type(exc).__name__}") from None
        if entry.value is None:
            return None, entry.revision or 0
        return PublishedPolicy.decode(entry.value), entry.revision or 0

    async def wait_change(self, timeout_s: float) -> None:
        """A watch on the key (opened on first use): its next update, or ``timeout_s``."""
        try:
            if self._watcher is None:
                with anyio.fail_after(OP_TIMEOUT_S):
                    self._watcher = await self._kv.watch(KEY)
            await self._watcher.updates(timeout=timeout_s)  # type: ignore[no-untyped-call]
        except nats.errors.TimeoutError:
            return  # nothing changed meanwhile
        except _TRANSPORT as exc:
            watcher, self._watcher = self._watcher, None
            if watcher is not None:  # a new watch next time; this one's subscription goes
                with contextlib.suppress(*_TRANSPORT):
                    await watcher.stop()  # type: ignore[no-untyped-call]
            raise BusUnavailable(f"watching the policy board: {type(exc).__name__}") from None

    async def publish(self, policy: PublishedPolicy) -> bool:
        """Put ``policy`` unless the board already holds its history version or a newer one."""
        while True:
            current, revision = await self.read()
            if current is not None and current.history_version >= policy.history_version:
                return False
            try:
                with anyio.fail_after(OP_TIMEOUT_S):
                    if revision:
                        await self._kv.update(KEY, policy.encode(), last=revision)
                    else:
                        await self._kv.create(KEY, policy.encode())
                return True
            except KeyWrongLastSequenceError:
                continue  # someone wrote meanwhile: read again and compare
            except _TRANSPORT as exc:
                raise BusUnavailable(
                    f"publishing to the policy board: {type(exc).__name__}") from None


async def newest_policy_change(store: EventStore, region: str,
                               after_version: int = 0) -> PublishedPolicy | None:
    """The newest PolicyChanged of the region's policy history after ``after_version``."""
    events = await store.history(policy_entity(region), from_version=after_version + 1)
    for event in reversed(events):
        if isinstance(event.body, PolicyChanged):
            b = event.body
            return PublishedPolicy(event.version, b.policy_version, b.sha256, b.document)
    return None


class PolicyPublisher:
    """An actor node's loop: the newest PolicyChanged committed in the store goes on the board.
    Every node runs one; the board's compare-and-set makes them agree."""

    def __init__(self, store: EventStore, region: str, poll_s: float = 0.5) -> None:
        self.store = store
        self.region = region
        self.poll_s = poll_s
        self.seen = 0
        self.failures = 0
        self.outage = 0  # polls failed in a row because the store or the bus is down

    async def run(self, board: Board) -> None:
        while True:
            try:
                newest = await newest_policy_change(self.store, self.region, self.seen)
                if newest is not None:
                    await board.publish(newest)
                    self.seen = newest.history_version
            except Exception as exc:
                self.failures += 1
                if not (isinstance(exc, SafeguardsError) and exc.retryable):
                    log.exception("publishing the %s region's policy failed", self.region)
                else:
                    # An outage is said once, not with a traceback every poll (two a second
                    # per node for as long as PostgreSQL is down).
                    self.outage += 1
                    if self.outage == 1:
                        log.warning("publishing the %s region's policy failed (%s); trying "
                                    "again every %.1f s", self.region, type(exc).__name__,
                                    self.poll_s)
            else:
                if self.outage:
                    log.info("publishing the %s region's policy again after %d failed polls",
                             self.region, self.outage)
                self.outage = 0
            await anyio.sleep(self.poll_s)


async def follow_policy(open_board: Callable[[], Awaitable[Board | None]], region: str,
                        apply: Callable[[Policy, PublishedPolicy], None], *,
                        recheck_s: float = RECHECK_S) -> None:
    """Apply every new document the region's board shows (a process's policy follower): read,
    then wait for the board's change notice (at most ``recheck_s``) and read again."""
    board: Board | None = None
    applied = ""
    while True:
        try:
            if board is None:
                board = await open_board()
            if board is not None:
                published, _ = await board.read()
                if published is not None and published.sha256 != applied:
                    source = f"{region} policy v{published.history_version}"
                    try:
                        policy = parse_policy(published.document, source=source)
                    except PolicyError:
                        log.exception("the %s region's published policy does not validate; "
                                      "keeping the one in force", region)
                    else:
                        apply(policy, published)
                        log.info("region %s: policy %s in force (history v%d)", region,
                                 policy.version, published.history_version)
                    applied = published.sha256
            if board is not None:
                await board.wait_change(recheck_s)
                continue
        except BusUnavailable as exc:
            log.debug("policy board unavailable: %s", exc)
            board = None
        await anyio.sleep(0.25)  # no board yet, or the bus is down: try again shortly


async def run_policy(store: EventStore, region: str, open_board: Callable[[], Awaitable[Board]],
                     apply: Callable[[Policy], None]) -> None:
    """An actor node's two policy loops over one board (``core.bus.RegionBus.run_policy``):
    publish the store's newest change, follow what the board shows. ``open_board`` may raise
    BusUnavailable while the bus cannot open it; both loops retry."""

    async def publish() -> None:
        while True:
            try:
                board = await open_board()
            except BusUnavailable:
                await anyio.sleep(1.0)
                continue
            await PolicyPublisher(store, region).run(board)

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        await follow_policy(open_board, region, lambda policy, _: apply(policy))
