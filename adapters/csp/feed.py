"""Feeds the gate's enforcement cache from the region's enforcement stream.

The stream keeps the last command per account (``sg.<region>.enforce.<token>``, one message per
subject). A session creates an ephemeral push consumer with ``DeliverLastPerSubject``, so the
first messages are the full current state and everything after is live; it asks for idle
heartbeats and flow control and handles both itself, because a heartbeat is what tells the gate
that its cache is current while nothing changes (``Gate.touch``). A gap in consumer sequences, a
missed heartbeat or a lost connection ends the session and a new one re-reads the last values;
commands are applied only when newer than what the cache holds, so re-reading is harmless.

Only the region's relay can command a gate: a message is applied only when a trusted
enforcement key signed its subject and payload, and the command it holds is sound for the
subject it came on (``bus.signing``). Anything else (unsigned, an unknown key, a bad signature,
another account's subject, another region, a level off the ladder, an impossible version) is
refused, counted by reason (``safeguards_csp_commands_rejected_total``) and logged as an alarm
without its contents.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import anyio
import nats
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js import api
from opentelemetry.trace import SpanKind

from safeguards.adapters import tracing
from safeguards.adapters.bus.signing import CommandVerifier, command_problem
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.feed_snapshot import FeedSnapshot
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.heap import settle_heap
from safeguards.core.codec import decode_command
from safeguards.core.errors import CodecError
from safeguards.core.ids import validate_region
from safeguards.core.subjects import enforce_subject, stream_name
from safeguards.core.trace_context import TRACEPARENT

log = logging.getLogger(__name__)

_STATUS = "Status"
_DESCRIPTION = "Description"
_LAST_CONSUMER = "Nats-Last-Consumer"
_STALLED = "Nats-Consumer-Stalled"


class EnforcementFeed:
    def __init__(self, link: BusLink, region: str, gate: Gate, verifier: CommandVerifier, *,
                 heartbeat_s: float = 1.0, clock: Callable[[], float] = gate_now,
                 snapshot: FeedSnapshot | None = None, cleanup_timeout_s: float = 2.0) -> None:
        self.link = link
        self.region = validate_region(region)
        self.verifier = verifier
        self.snapshot = snapshot  # the last synced state on local disk, kept by ``persist``
        # Accounts a snapshot restored: until the first sync the stream's values replace them,
        # and those the stream does not hold are dropped (an old snapshot never outranks it).
        self.restored: set[str] = set()
        self._seen_in_first_sync: set[str] = set()
        self.gate = gate
        self.heartbeat_s = heartbeat_s
        # the longest a session's end waits to delete its consumer (best effort: the server
        # drops an inactive one by itself): a bound for a NATS that does not answer. A front
        # end's stop closes the link only after this (``InlineGate.running``).
        self.cleanup_timeout_s = cleanup_timeout_s
        self.clock = clock
        self.stream = stream_name(region, "ENFORCE")
        self.ready = anyio.Event()  # set once the initial state has been read
        self.sessions = 0
        self.resyncs = 0
        self.rejected: dict[str, int] = {}  # refused commands by reason (never applied)
        self.callback_failures = 0  # messages whose handling raised (the session re-reads)
        self.cleanup_timeouts = 0  # sessions whose consumer delete went unanswered in time
        self._expected = 1
        self._broken = False
        self._last_seen = 0.0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.link.connected.wait()
        while True:
            try:
                await self._session()
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                if self.resyncs % 30 == 0:  # once, then every 30th retry: no log flood
                    log.warning("enforcement feed for %s: session ended (%s); re-reading",
                                self.region, type(exc).__name__)
            self.resyncs += 1
            await anyio.sleep(min(self.heartbeat_s, 1.0))

    async def _session(self) -> None:
        nc, js = self.link.nc, self.link.js
        if nc is None or js is None:
            raise nats.errors.ConnectionClosedError
        self.sessions += 1
        self._expected = 1
        self._broken = False
        self._last_seen = time.monotonic()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=self._on_msg)
        consumer: str | None = None
        try:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=api.AckPolicy.NONE, filter_subject=f"sg.{self.region}.enforce.>",
                deliver_subject=inbox, idle_heartbeat=self.heartbeat_s, flow_control=True,
                mem_storage=True, inactive_threshold=max(10.0, 5 * self.heartbeat_s),
                max_deliver=1,
            )
            with anyio.fail_after(5.0):
                info = await js.add_consumer(self.stream, config)
            consumer = info.name
            delivered = info.delivered.consumer_seq if info.delivered is not None else 0
            if info.num_pending == 0 and not delivered:
                self.gate.touch(self.clock())
                self._synced()
            while not self._broken:
                await anyio.sleep(self.heartbeat_s / 2)
                if time.monotonic() - self._last_seen > 3 * self.heartbeat_s:
                    log.warning("enforcement feed for %s: heartbeats missed", self.region)
                    return
        finally:
            with anyio.move_on_after(self.cleanup_timeout_s, shield=True) as cleanup:
                # Best effort: the server drops an inactive ephemeral consumer by itself.
                with contextlib.suppress(OSError, TimeoutError, nats.errors.Error):
                    await sub.unsubscribe()
                    if consumer is not None and nc.is_connected:
                        await js.delete_consumer(self.stream, consumer)
            if cleanup.cancelled_caught:
                self.cleanup_timeouts += 1
                log.warning("enforcement feed for %s: consumer delete unanswered after %.1f s; "
                            "the server expires it", self.region, self.cleanup_timeout_s)

    async def _on_msg(self, msg: Msg) -> None:
        """The subscription's callback: nothing raised here may vanish into nats-py's error
        callback. A failure (a malformed header, a bug applying a command) is counted, logged
        with its traceback, and breaks the session, so the next one re-reads the stream and the
        command is not lost."""
        try:
            await self._handle(msg)
        except Exception:
            self.callback_failures += 1
            self._broken = True
            log.exception("enforcement feed for %s: a message could not be handled; "
                          "re-reading the stream", self.region)

    async def _handle(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        now = self.clock()
        headers = msg.headers
        if headers and headers.get(_STATUS) == "100":  # idle heartbeat or flow control request
            self.gate.touch(now)
            if msg.reply:
                await msg._client.publish(msg.reply, b"")
            stalled = headers.get(_STALLED)
            if stalled:
                await msg._client.publish(stalled, b"")
            last = headers.get(_LAST_CONSUMER)
            if last is not None and int(last) != self._expected - 1:
                self._broken = True  # we missed messages
            return
        meta = msg.metadata
        if meta.sequence.consumer != self._expected:
            self._broken = True
            return
        self._expected += 1
        self.gate.touch(now)
        problem = self.verifier.problem(msg.subject, msg.data, headers)
        if problem is None:
            try:
                command = decode_command(msg.data)
            except CodecError:
                problem = "undecodable"
            else:
                problem = command_problem(command, msg.subject, self.region)
        if problem is None:
            first_sync = not self.ready.is_set()
            authoritative = first_sync and bool(self.restored)
            if tracing.TRACER is None or first_sync or not headers \
                    or TRACEPARENT not in headers:
                # (a re-read of the stream at start is not traced: 100k spans of old traces)
                self.gate.apply(command, now, authoritative=authoritative)
            else:  # the relay's publish span is its parent (a malformed one: a new root)
                with tracing.TRACER.start_as_current_span(
                        "safeguards.gate.apply", tracing.remote_parent(headers),
                        kind=SpanKind.CONSUMER, attributes={
                            "safeguards.level": command.level,
                            "safeguards.command_version": command.version,
                            "safeguards.region": self.region}):
                    self.gate.apply(command, now, authoritative=authoritative)
            if first_sync:
                self._seen_in_first_sync.add(command.account_id)
            if self.snapshot is not None and headers:
                self.snapshot.remember(msg.subject, headers, msg.data)
        else:
            self.rejected[problem] = self.rejected.get(problem, 0) + 1
            log.error("enforcement feed for %s: ALARM command refused (%s) at stream seq %d",
                      self.region, problem, meta.sequence.stream)
        if meta.num_pending == 0:
            self._synced()

    def _synced(self) -> None:
        if not self.ready.is_set():
            for account in self.restored - self._seen_in_first_sync:
                self.gate.forget(account)
                if self.snapshot is not None:
                    self.snapshot.forget(enforce_subject(self.region, account))
            self.restored, self._seen_in_first_sync = set(), set()
        self.gate.synced = True  # from here on the gate serves by what it holds
        self.ready.set()

    async def persist(self, every_s: float = 5.0) -> None:
        """Once synced, keep the local snapshot current (written off the event loop, only when
        something changed); a failed write is logged and retried at the next turn."""
        if self.snapshot is None:
            return
        await self.ready.wait()
        while True:
            if self.snapshot.dirty:
                try:
                    await anyio.to_thread.run_sync(self.snapshot.save)
                except OSError:
                    log.exception("enforcement snapshot for %s not written", self.region)
            await anyio.sleep(every_s)


async def freeze_gc_when_ready(feed: EnforcementFeed) -> None:
    """Once the initial enforcement state is loaded, take it out of the collector's scans: a full
    collection over 100k long-lived cache entries would otherwise be a multi-millisecond pause on
    the serving path."""
    await feed.ready.wait()
    settle_heap()
