"""The outbox relay: publish committed enforcement commands (and the score signals decisions
forward to prompts' histories), then mark them published.

Two paths. The fast path publishes what a commit cycle just committed, straight from memory,
for latency, and marks what JetStream confirmed as published (in batches, by message id), so
the rows are not sent again. The slow path reads the rows still pending back from the store,
publishes them and marks them; it alone is the guarantee (a node that dies between commit and
publish or mark leaves rows that any node's relay sends), and whatever it re-publishes that was
already sent, JetStream drops as a duplicate.

Rows are published in outbox order with ``Nats-Msg-Id`` = command id, and a batch stops at its
first unconfirmed publish, so an account's commands reach the last-value stream in version order
and a re-publish (after a crash between publish and mark, or by a second relay) is dropped by
JetStream's duplicate window. Adapters apply a command only if its version is newer than theirs.
A row on an input subject is a forwarded signal: it goes to the inputs stream
(``RegionBus.signals``) under the same rules, and the receiving actor's inbox absorbs a repeat.

A NATS server that is killed can lose the last messages it had already acknowledged (a single
server writes its file store behind its acks; a cluster whose leader dies can lose what it
acknowledged before a follower had it, as Jepsen found). So the relay reconciles: after each
reconnect, and every ``reconcile_s`` whether or not this node's connection noticed anything (a
cluster's leader change elsewhere does not disconnect it), for the accounts among the most
recently published rows it compares the stream's last command with the newest one committed
and published, and re-publishes ours when the stream's is older or missing, with
``Nats-Expected-Last-Subject-Sequence`` set to what it saw, so a newer command published
meanwhile is never overwritten by an older one. Each restoration is logged as a warning and
counted (``commands_repaired``): the alarm that the broker lost an acknowledged command.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from safeguards.actors import tracing
from safeguards.actors.loading import is_store_failure
from safeguards.actors.metrics import NodeMetrics
from safeguards.core.bus import BusUnavailable, CommandStream, SignalPublisher
from safeguards.core.codec import decode_command
from safeguards.core.errors import CodecError
from safeguards.core.ports import EventStore, OutboxMessage
from safeguards.core.subjects import is_inputs_subject

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2.0

T = TypeVar("T")


class OutboxRelay:
    def __init__(self, *, store: EventStore, commands: CommandStream, signals: SignalPublisher,
                 metrics: NodeMetrics, poll_s: float = 0.5, batch: int = 256,
                 store_timeout_s: float = 10.0, fast_queue: int = 4096,
                 reconnects: Callable[[], int] = lambda: 0, repair_scan: int = 4096,
                 reconcile_s: float = 15.0) -> None:
        self.store = store
        self.commands = commands
        self.signals = signals
        self.metrics = metrics
        self.poll_s = poll_s
        self.batch = batch
        self.store_timeout_s = store_timeout_s
        self._wake = anyio.Event()
        self._fast_in, self._fast_out = anyio.create_memory_object_stream[OutboxMessage](
            fast_queue)
        self._fast_failed: set[str] = set()
        self._confirmed_in, self._confirmed_out = anyio.create_memory_object_stream[str](
            fast_queue)
        self._reconnects = reconnects
        self._repaired_at = reconnects()
        self.repair_scan = repair_scan
        self.reconcile_s = reconcile_s
        self._reconcile_due = 0.0  # set when it runs

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows, so they go out without a poll's wait."""
        self._wake.set()

    def offer(self, messages: Sequence[OutboxMessage]) -> None:
        """The fast path: publish just-committed messages now, without reading them back.

        The rows stay pending in the store until the fast path or a flush marks them, so a lost
        fast publish costs latency, never a command. A full queue sends the messages by the slow
        path only (counted)."""
        for m in messages:
            try:
                self._fast_in.send_nowait(m)
            except anyio.WouldBlock:
                self.metrics.fast_path_overflow += 1
                self.wake()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._fast_path)
            tg.start_soon(self._mark_fast)
            self._reconcile_due = anyio.current_time() + self.reconcile_s
            task_status.started()
            while True:
                with anyio.move_on_after(self.poll_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush()
                seen = self._reconnects()
                due = anyio.current_time() >= self._reconcile_due
                if (seen != self._repaired_at or due) and await self.repair() is not None:
                    self._repaired_at = seen
                    self._reconcile_due = anyio.current_time() + self.reconcile_s
                    self.metrics.reconciliations += 1

    async def _fast_path(self) -> None:
        async for m in self._fast_out:
            if m.subject in self._fast_failed:
                continue  # an older command of this account is unconfirmed: keep the order
            if not await self._traced_publish(m, "fast"):
                self._fast_failed.add(m.subject)
            else:
                # When the marker is behind (a slow store), the slow path marks these instead.
                with contextlib.suppress(anyio.WouldBlock):
                    self._confirmed_in.send_nowait(m.message_id)

    async def _mark_fast(self) -> None:
        """Marks what the fast path published, in batches at most every 0.1 s (one statement per
        batch, whatever the command rate); a failed mark leaves the rows to the slow path, which
        re-publishes (deduplicated) and marks them."""
        async for first in self._confirmed_out:
            await anyio.sleep(min(0.1, self.poll_s / 5))
            ids = [first]
            while len(ids) < self.batch:
                try:
                    ids.append(self._confirmed_out.receive_nowait())
                except anyio.WouldBlock:
                    break
            if await self._store(self.store.mark_published_messages(ids), done=True):
                self.metrics.commands_published += len(ids)

    async def _traced_publish(self, m: OutboxMessage, path: str) -> bool:
        """``_publish`` in a span under the commit that wrote ``m`` (tracing on, and its commit
        traced in this process), which the bus writes into its headers."""
        if tracing.TRACER is None:
            return await self._publish(m)
        traced = tracing.relay_span(
            m.message_id, "signal" if is_inputs_subject(m.subject) else "command", path)
        if traced is None:
            return await self._publish(m)
        with traced:
            sent = await self._publish(m)
        if sent:
            tracing.published(m.message_id)
        return sent

    async def _publish(self, m: OutboxMessage) -> bool:
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT_S):
                if is_inputs_subject(m.subject):
                    await self.signals.publish(m)
                else:
                    await self.commands.publish(m)
        except (TimeoutError, BusUnavailable) as exc:
            log.warning("relay: publish not confirmed (%s); retrying later", type(exc).__name__)
            self.metrics.bus_failures += 1
            return False
        return True

    async def repair(self) -> int | None:
        """Re-publish the newest command of each recently published account whose command the
        stream lost; returns how many were restored, None when the bus or store failed (the next
        poll tries again)."""
        newest = await self._store(self.store.latest_published(self.repair_scan))
        if newest is None:
            return None
        restored = 0
        for m in newest:
            if is_inputs_subject(m.subject):
                continue  # a forwarded signal: the receiving inbox, not a last value, is the truth
            try:
                ours = decode_command(m.payload).version
                with anyio.fail_after(PUBLISH_TIMEOUT_S):
                    last = await self.commands.last(m.subject)
                    # a forged last command (not signed by a trusted key) counts as none: the
                    # gates refuse it, so the stored command is laid over it
                    seen_seq, seen_version = (0, 0) if last is None else (
                        last[0], 0 if last[1] is None else decode_command(last[1]).version)
                    if seen_version >= ours:
                        continue
                    if not await self.commands.publish_after(m, seen_seq):
                        # The stream's last command changed since we looked (a newer one): fine.
                        log.info("relay repair: %s not re-published (a newer command arrived)",
                                 m.subject)
                        continue
                restored += 1
            except CodecError:
                log.error("relay repair: an undecodable command on %s; left as it is", m.subject)
            except (TimeoutError, BusUnavailable):
                self.metrics.bus_failures += 1
                return None
        if restored:
            log.warning("relay repair: re-published %d command(s) the stream had lost", restored)
        self.metrics.commands_repaired += restored
        return restored

    async def _store(self, call: Awaitable[T], *, done: T | None = None) -> T | None:
        """A store call with its deadline: its result (``done`` for one that returns nothing),
        or None after a store failure (counted; the caller gives up until its next turn)."""
        try:
            with anyio.fail_after(self.store_timeout_s):
                result = await call
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            self.metrics.store_failures += 1
            return None
        return done if result is None else result

    async def flush(self) -> int:
        """Publish everything pending now; returns how many rows were confirmed."""
        total = 0
        while True:
            rows = await self._store(self.store.pending_outbox(self.batch))
            if rows is None:
                return total
            if not rows:
                # Everything committed is confirmed: the fast path may serve every account again.
                self._fast_failed.clear()
                return total
            confirmed: list[int] = []
            for row in rows:
                if not await self._traced_publish(row.message, "slow"):
                    # Stop here: publishing this account's next version before this one would
                    # let the last-value stream end on a stale command.
                    break
                confirmed.append(row.outbox_id)
            if confirmed:
                if await self._store(self.store.mark_published(confirmed), done=True) is None:
                    return total  # published but not marked: re-published later, deduplicated
                self.metrics.commands_published += len(confirmed)
                total += len(confirmed)
            if len(confirmed) < len(rows) or len(rows) < self.batch:
                return total
