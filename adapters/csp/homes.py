"""Home-region routing at the gate: an account homed elsewhere is served here by its home's rules.

For each account it serves, the gate learns the account's home (``core.homes``) once: its own
region's directory, then its peers' (one key read each), and where none knows the account, a
claim (first use): a create in the global home register (``bus.home_claims``), so of two
regions serving a new account at once only one becomes its home, then, where that is this
region, a create in its own directory. The answer is kept in memory for ``cache_s`` at most:
the gate watches the register's new writes (headers only) and drops a kept home as soon as an
operator moves or onboards the account there (``ops migrate-home``, ``ops home --onboard``), so
its next request asks the directories again. While the watch is down (counted in
``notice_failures``, retried with a doubling backoff) kept homes live out ``cache_s``; every
(re)start of the watch drops them all, for the notices it may have missed.

For an account homed in another region the request is still classified here (screening, the
content stream, the classifier: the text never leaves this region), but the metadata signal
and the scores go to the home's input subjects (``Telemetry``, the classifier), signed with
this region's forwarding key for that home; and the gate applies the home's enforcement: the
account's (and the aggregates' the request names) last command on the home's enforcement
stream, read by subject (a direct get, verified with the home's enforcement keys), before its
first request is checked, then re-read in the background every ``refresh_s`` (0.25 s) for as
long as it keeps calling (a request within ``follow_s``): a level its home sets reaches this gate
within about ``refresh_s``, whether or not the account calls meanwhile (a region hopper's next
request here meets it), rather than with its first request after a refresh was due. The gate
may not subscribe to a peer's enforcement (``bus.nats_auth``: reads by key only), so this is a
poll with a bounded cost: a sweep's reads go one at a time, the most recently calling accounts
first, at most ``SWEEP_READS_PER_S`` a second (100 accounts every 0.25 s: 6 % of a core on 2
loaded cores, measured; the peer's server answers as many direct gets); an account past that
budget is refreshed with its own requests as before (queued once its last read is
``refresh_s`` old).

A lookup that fails (NATS down, a slow peer) serves the request as this region's, counted in
``failures`` and logged, and is retried on the account's next request (nothing is cached).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.home_claims import (
    CLAIMS_STREAM,
    CLAIMS_SUBJECTS,
    HomeClaims,
    claim_key,
)
from safeguards.adapters.bus.homes import HomeDirectory
from safeguards.adapters.bus.signing import CommandVerifier, command_problem, load_verifier
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.core.codec import decode_command
from safeguards.core.errors import CodecError
from safeguards.core.homes import HomeEntry, directory_key
from safeguards.core.ids import validate_region
from safeguards.core.subjects import enforce_subject, stream_name

log = logging.getLogger(__name__)

CACHE_SIZE = 100_000
REFRESH_QUEUE = 1_000
NOTICED_KEPT = 10_000  # keys noticed lately: a lookup in flight across a notice is not kept
NOTICE_RETRY_S, NOTICE_RETRY_CAP_S = 0.5, 30.0
NOTICE_OPEN_S = 5.0  # opening the register for the watch (a refusal reads as a timeout)
FOLLOWED_MAX = 10_000  # accounts homed elsewhere that called lately (the sweeps' candidates)
SWEEP_READS_PER_S = 400  # the sweeps' direct gets a second, at most


class HomeRouting:
    def __init__(self, link: BusLink, region: str, partitions: int, peers: tuple[str, ...],
                 gate: Gate, *, cache_s: float = 60.0, refresh_s: float = 0.25,
                 follow_s: float = 30.0, lookup_deadline_s: float = 1.0,
                 link_keys: Mapping[str, bytes] | None = None) -> None:
        """``link_keys``: the peers' link keys this gate holds (``identity.peer_link_key``)."""
        self.link = link
        self.link_keys = dict(link_keys or {})
        self.region = validate_region(region)
        self.partitions = partitions
        self.peers = tuple(validate_region(p) for p in peers if p != region)
        self.gate = gate
        self.cache_s = cache_s
        self.refresh_s = refresh_s
        self.follow_s = follow_s
        self.lookup_deadline_s = lookup_deadline_s
        self._directory: HomeDirectory | None = None
        self._verifiers: dict[str, CommandVerifier] = {}
        self._claims: HomeClaims | None = None
        self._homes: dict[str, tuple[HomeEntry, float]] = {}  # account -> (entry, until)
        self._accounts: dict[str, str] = {}  # directory key -> account, of the kept homes
        self._noticed: OrderedDict[str, float] = OrderedDict()  # key -> when last noticed
        self._refreshed: dict[str, float] = {}  # foreign entity -> when its command was read
        # account -> (home, the entities of its last request, when it came): what sweeps re-read
        self._followed: OrderedDict[str, tuple[str, tuple[str, ...], float]] = OrderedDict()
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[str, tuple[str, ...]]](REFRESH_QUEUE)
        self.failures = 0  # lookups that failed: served as this region's
        self.claimed = 0  # accounts this gate claimed on first use
        self.forwarded = 0  # requests routed to another home
        self.sweep_reads = 0  # home commands re-read by the sweeps (direct gets)
        self.refresh_dropped = 0  # refreshes not queued (queue full): the next request asks
        self.rejected: dict[str, int] = {}  # home commands refused, by reason
        self.watching = False  # the register's notices are followed (else: cache_s alone)
        self.notices = 0  # register writes seen
        self.dropped = 0  # kept homes dropped on a notice
        self.notice_failures = 0  # watches that failed or ended (kept homes then expire alone)
        self.foreign_claims = 0  # register claims naming no region this gate knows: not followed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the directory once connected, then refresh the home's enforcement of accounts
        that keep calling, off the request path."""
        task_status.started()
        await self.link.connected.wait()
        try:
            await self._open()
        except BusUnavailable as exc:  # the first lookup tries again
            log.warning("home directory of %s not opened yet: %s", self.region, exc)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_notices)
            tg.start_soon(self._sweep)
            async with self._receive:
                async for home, entities in self._receive:
                    try:
                        await self._read_commands(home, entities)
                    except BusUnavailable as exc:
                        self.failures += 1
                        log.warning("home enforcement refresh from %s failed: %s", home, exc)
            tg.cancel_scope.cancel()

    async def _sweep(self) -> None:
        """Every ``refresh_s``, re-read the home's enforcement of the accounts that called
        within ``follow_s``, the most recent first, one read at a time and at most
        ``SWEEP_READS_PER_S`` reads a second; those quiet longer are no longer followed."""
        failing = False
        while True:
            await anyio.sleep(self.refresh_s)
            now = time.monotonic()
            budget = SWEEP_READS_PER_S * self.refresh_s
            for account, (home, entities, last) in reversed(list(self._followed.items())):
                if last < now - self.follow_s:  # and every one before it (calling order)
                    self._followed.pop(account, None)
                    continue
                if budget < len(entities):
                    break  # the rest is refreshed with its own requests (``follow``)
                if now - self._refreshed.get(account, 0.0) < self.refresh_s / 2:
                    continue  # its request just had it read
                budget -= len(entities)
                try:
                    with anyio.fail_after(self.lookup_deadline_s):
                        await self._read_commands(home, entities)
                except (BusUnavailable, TimeoutError) as exc:  # the next sweep tries again
                    self.failures += 1
                    if not failing:  # once per outage, not every sweep
                        log.warning("home enforcement sweep from %s failed: %s", home,
                                    type(exc).__name__)
                    failing = True
                    break
                failing = False
                self.sweep_reads += len(entities)

    async def _watch_notices(self) -> None:
        """Follow the register's notices for as long as the gate runs: a watch that fails or
        ends is counted, logged and started again after a doubling backoff."""
        backoff = NOTICE_RETRY_S
        while True:
            try:
                await self._follow_notices()
                raise BusUnavailable("the register's watch ended")
            except (BusUnavailable, TimeoutError, OSError, APIError, nats.errors.Error):
                self.watching = False
                self.notice_failures += 1
                log.warning("home register watch of %s down: kept homes expire after %.0f s "
                            "until it is back", self.region, self.cache_s, exc_info=True)
            await anyio.sleep(backoff)
            backoff = min(NOTICE_RETRY_CAP_S, backoff * 2)

    async def _follow_notices(self) -> None:
        await self.link.connected.wait()
        js = self.link.js
        if js is None or not self.link.is_connected:
            raise BusUnavailable("not connected")
        with anyio.fail_after(NOTICE_OPEN_S):
            await self._open_claims()
        sub = await js.subscribe(CLAIMS_SUBJECTS, stream=CLAIMS_STREAM, ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.NEW, headers_only=True,
                                 inactive_threshold=300.0)
        try:
            # what changed while nothing was watching: every kept home is asked again
            self._homes = {a: (entry, 0.0) for a, (entry, _) in self._homes.items()}
            self.watching = True
            async for msg in sub.messages:
                key = claim_key(msg.subject)
                if key is not None:
                    self.forget(key)
        finally:
            self.watching = False
            with anyio.CancelScope(shield=True), \
                    contextlib.suppress(nats.errors.ConnectionClosedError):
                await sub.unsubscribe()  # (a closed connection dropped it already)

    def forget(self, key: str) -> None:
        """The register says the account under ``key`` was claimed, moved or onboarded: its
        kept home (if any) expires now (a request in flight still reports where it went), and
        a lookup in flight for it is not kept."""
        self.notices += 1
        self._noticed[key] = time.monotonic()
        self._noticed.move_to_end(key)
        if len(self._noticed) > NOTICED_KEPT:
            self._noticed.popitem(last=False)
        account = self._accounts.get(key)
        kept = self._homes.get(account) if account is not None else None
        if account is not None and kept is not None and kept[1] > 0.0:
            self._homes[account] = (kept[0], 0.0)
            self.dropped += 1

    async def _open(self) -> HomeDirectory:
        if self._directory is None:
            js = self.link.js
            if js is None or not self.link.is_connected:
                raise BusUnavailable("not connected")
            self._directory = await HomeDirectory.open(js, self.region, self.peers)
        return self._directory

    async def _open_claims(self) -> HomeClaims:
        if self._claims is None:
            js = self.link.js
            if js is None or not self.link.is_connected:
                raise BusUnavailable("not connected")
            self._claims = await HomeClaims.open(js)
        return self._claims

    async def lookup(self, account: str) -> tuple[HomeEntry | None, bool]:
        """The account's home where it is another region (None: this region's), and whether it
        was just looked up (not from memory)."""
        now = time.monotonic()
        cached = self._homes.get(account)
        if cached is None or cached[1] <= now:
            try:
                with anyio.fail_after(self.lookup_deadline_s):
                    entry = await self._lookup(account)
            except (BusUnavailable, TimeoutError) as exc:
                self.failures += 1
                self._homes.pop(account, None)  # telemetry: served, and signalled, as ours
                log.warning("home lookup failed (%s): served as %s's", type(exc).__name__,
                            self.region)
                return None, False
            self._keep(account, entry, now)
            first = True
        else:
            entry, first = cached[0], False
        return (None, False) if entry.home == self.region else (entry, first)

    def link_key_of(self, home: str) -> bytes | None:
        """The home region's link key, where this gate holds it: an account homed there has its
        API-key fingerprint, prompt link and digests made under it, as its home makes them."""
        return self.link_keys.get(home)

    async def follow(self, request: GateRequest, entry: HomeEntry, first: bool) -> None:
        """The home's enforcement of the account and of the request's aggregates: read now on
        its first request here (bounded), then re-read by the sweeps while it keeps calling
        (and, past ``refresh_s`` since its last read, queued with its request)."""
        now = time.monotonic()
        account = request.account_id
        self.forwarded += 1
        entities = (account, *request.aggregates)
        self._followed[account] = (entry.home, entities, now)  # the sweeps re-read it
        self._followed.move_to_end(account)
        if len(self._followed) > FOLLOWED_MAX:
            self._followed.popitem(last=False)
        if first:  # its first request here waits for the home's enforcement (bounded)
            try:
                with anyio.fail_after(self.lookup_deadline_s):
                    await self._read_commands(entry.home, entities)
            except (BusUnavailable, TimeoutError) as exc:
                self.failures += 1
                log.warning("home enforcement read from %s failed: %s", entry.home,
                            type(exc).__name__)
        elif now - self._refreshed.get(account, 0.0) >= self.refresh_s:
            self._refreshed[account] = now  # one queued refresh per interval
            try:
                self._send.send_nowait((entry.home, entities))
            except anyio.WouldBlock:
                self.refresh_dropped += 1

    def _keep(self, account: str, entry: HomeEntry, asked: float) -> None:
        """Keep the home looked up since ``asked``, unless a notice for it came meanwhile."""
        key = directory_key(account)
        # noticed while it was looked up: serves this request, the next one asks again
        until = 0.0 if self._noticed.get(key, -1.0) >= asked else asked + self.cache_s
        if account not in self._homes and len(self._homes) >= CACHE_SIZE:
            oldest = next(iter(self._homes))
            del self._homes[oldest]
            self._accounts.pop(directory_key(oldest), None)
        self._homes[account] = (entry, until)
        self._accounts[key] = account

    def foreign_home(self, account_id: str) -> HomeEntry | None:
        """The home this gate routed the account to (telemetry's question, after the
        response): None where it is this region's or was never looked up."""
        cached = self._homes.get(account_id)
        if cached is None or cached[0].home == self.region:
            return None
        return cached[0]

    async def _lookup(self, account: str) -> HomeEntry:
        directory = await self._open()
        found = await directory.lookup(account)
        if found is not None:
            return found
        mine = HomeEntry(self.region, self.partitions, "first_use",
                         datetime.now(UTC).isoformat(timespec="seconds"))
        won = await (await self._open_claims()).claim(account, mine)
        if won is None or (won.home != self.region and won.home not in self.peers):
            self.foreign_claims += 1
            raise BusUnavailable("the home register's claim names no region this gate serves")
        if won.home != self.region:
            return won  # another region claimed it first: its home, its history
        held = await directory.claim(account, won)
        self.claimed += held is mine
        return held

    async def _read_commands(self, home: str, entities: tuple[str, ...]) -> None:
        """The home's last command for each entity, verified, into the gate's cache."""
        js = self.link.js
        if js is None:
            raise BusUnavailable("not connected")
        verifier = self._verifiers.get(home)
        if verifier is None:
            verifier = self._verifiers[home] = load_verifier(home)
        stream = stream_name(home, "ENFORCE")
        for entity in entities:
            subject = enforce_subject(home, entity)
            try:
                msg = await js.get_last_msg(stream, subject, direct=True)
            except NotFoundError:
                continue  # the home holds no command for it: its default tier
            except APIError as exc:
                raise BusUnavailable(f"home enforcement: {exc.description}") from None
            except (OSError, nats.errors.Error) as exc:
                raise BusUnavailable(f"home enforcement: {type(exc).__name__}") from None
            self._refreshed[entity] = time.monotonic()
            data = msg.data or b""
            problem = verifier.problem(subject, data, msg.headers)
            if problem is None:
                try:
                    command = decode_command(data)
                except CodecError:
                    problem = "undecodable"
                else:
                    problem = command_problem(command, subject, home)
            if problem is not None:
                self.rejected[problem] = self.rejected.get(problem, 0) + 1
                log.error("home enforcement from %s: ALARM command refused (%s)", home, problem)
                continue
            self.gate.apply(command, gate_now())
