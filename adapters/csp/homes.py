"""Home-region routing at the gate: an account homed elsewhere is served here by its home's rules.

For each account it serves, the gate learns the account's home (``core.homes``) once: its own
region's directory, then its peers' (one key read each), and where none knows the account, a
claim in its own directory (first use). The answer is kept in memory for ``cache_s``.

For an account homed in another region the request is still classified here (screening, the
content stream, the classifier: the text never leaves this region), but the metadata signal
and the scores go to the home's input subjects (``Telemetry``, the classifier), signed with
this region's forwarding key for that home; and the gate applies the home's enforcement: the
account's (and the aggregates' the request names) last command on the home's enforcement
stream, read by subject (a direct get, verified with the home's enforcement keys), before its
first request is checked and again at most every ``refresh_s`` while it keeps calling.

A lookup that fails (NATS down, a slow peer) serves the request as this region's, counted in
``failures`` and logged, and is retried on the account's next request (nothing is cached).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.js.errors import APIError, NotFoundError

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.homes import HomeDirectory
from safeguards.adapters.bus.signing import CommandVerifier, command_problem, load_verifier
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.core.codec import decode_command
from safeguards.core.errors import CodecError
from safeguards.core.homes import HomeEntry
from safeguards.core.ids import validate_region
from safeguards.core.subjects import enforce_subject, stream_name

log = logging.getLogger(__name__)

CACHE_SIZE = 100_000
REFRESH_QUEUE = 1_000


class HomeRouting:
    def __init__(self, link: BusLink, region: str, partitions: int, peers: tuple[str, ...],
                 gate: Gate, *, cache_s: float = 60.0, refresh_s: float = 1.0,
                 lookup_deadline_s: float = 1.0) -> None:
        self.link = link
        self.region = validate_region(region)
        self.partitions = partitions
        self.peers = tuple(validate_region(p) for p in peers if p != region)
        self.gate = gate
        self.cache_s = cache_s
        self.refresh_s = refresh_s
        self.lookup_deadline_s = lookup_deadline_s
        self._directory: HomeDirectory | None = None
        self._verifiers: dict[str, CommandVerifier] = {}
        self._homes: dict[str, tuple[HomeEntry, float]] = {}  # account -> (entry, until)
        self._refreshed: dict[str, float] = {}  # foreign entity -> when its command was read
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[str, tuple[str, ...]]](REFRESH_QUEUE)
        self.failures = 0  # lookups that failed: served as this region's
        self.claimed = 0  # accounts this gate claimed on first use
        self.forwarded = 0  # requests routed to another home
        self.refresh_dropped = 0  # refreshes not queued (queue full): the next request asks
        self.rejected: dict[str, int] = {}  # home commands refused, by reason

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the directory once connected, then refresh the home's enforcement of accounts
        that keep calling, off the request path."""
        task_status.started()
        await self.link.connected.wait()
        try:
            await self._open()
        except BusUnavailable as exc:  # the first lookup tries again
            log.warning("home directory of %s not opened yet: %s", self.region, exc)
        async with self._receive:
            async for home, entities in self._receive:
                try:
                    await self._read_commands(home, entities)
                except BusUnavailable as exc:
                    self.failures += 1
                    log.warning("home enforcement refresh from %s failed: %s", home, exc)

    async def _open(self) -> HomeDirectory:
        if self._directory is None:
            js = self.link.js
            if js is None or not self.link.is_connected:
                raise BusUnavailable("not connected")
            self._directory = await HomeDirectory.open(js, self.region, self.peers)
        return self._directory

    async def home_of(self, request: GateRequest) -> HomeEntry | None:
        """The account's home where it is another region (None: served as this region's)."""
        now = time.monotonic()
        account = request.account_id
        cached = self._homes.get(account)
        if cached is None or cached[1] <= now:
            try:
                with anyio.fail_after(self.lookup_deadline_s):
                    entry = await self._lookup(account)
            except (BusUnavailable, TimeoutError) as exc:
                self.failures += 1
                log.warning("home lookup failed (%s): served as %s's", type(exc).__name__,
                            self.region)
                return None
            if len(self._homes) >= CACHE_SIZE:
                del self._homes[next(iter(self._homes))]
            self._homes[account] = (entry, now + self.cache_s)
            first = True
        else:
            entry, first = cached[0], False
        if entry.home == self.region:
            return None
        self.forwarded += 1
        entities = (account, *request.aggregates)
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
        return entry

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
        held = await directory.claim(account, mine)
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
