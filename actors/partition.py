"""The dispatcher of one partition: pull a batch, route it to account actors, commit, ack.

Per batch, each actor with mail takes one turn per round: its oldest signal is decided on its
state, and the round's appends (one per account) go to the store as one group commit. A signal
is acked only after the transaction holding its inbox key, events and outbox rows committed, or
after the store said the inbox already held it. A lost version race reloads the account and
decides again; a failed store call keeps the messages alive (``in_progress``) and retries the
round, so an outage becomes backpressure rather than redelivery.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

import anyio
import nats.errors
from nats.aio.msg import Msg

from safeguards.actors.actor import AccountActor, Envelope, MailboxFull
from safeguards.actors.clock import Clock
from safeguards.actors.commit import GroupCommitter
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.consumers import PartitionConsumer
from safeguards.adapters.bus.dlq import DeadLetterReason, DeadLetters
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.core.codec import decode_signal, encode_command
from safeguards.core.decide import decide_and_fold
from safeguards.core.enforcement import commands_for
from safeguards.core.errors import CodecError, ConcurrencyConflict, SafeguardsError
from safeguards.core.policy import Policy
from safeguards.core.ports import AppendRequest, AppendResult, EventStore, OutboxMessage
from safeguards.core.state import AccountState, initial_state
from safeguards.core.subjects import enforce_subject, inputs_subject

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 2.0


class StoreFailure(Exception):
    """A store call failed or missed its deadline; the round is retried on fresh state."""


def is_store_failure(exc: BaseException) -> bool:
    if isinstance(exc, SafeguardsError):
        return exc.retryable and not isinstance(exc, ConcurrencyConflict)
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


class PartitionWorker:
    def __init__(self, *, region: str, partitions: int, partition: int, store: EventStore,
                 consumer: PartitionConsumer, dead_letters: DeadLetters, policy: Policy,
                 clock: Clock, settings: NodeSettings, metrics: NodeMetrics,
                 on_commands: Callable[[Sequence[OutboxMessage]], None] = lambda _: None,
                 committer: GroupCommitter | None = None) -> None:
        self.region = region
        self.partitions = partitions
        self.partition = partition
        self.store = store
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.policy = policy
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.on_commands = on_commands
        self.committer = committer
        self.actors: dict[str, AccountActor] = {}
        self._stop = anyio.Event()
        self.stopped = anyio.Event()
        self._source = f"acct-p{partition}"
        self._last_passivation = 0.0

    def request_stop(self) -> None:
        """Finish the batch in hand, then stop fetching (graceful drain)."""
        self._stop.set()
        self.consumer.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            await self._open()
            task_status.started()
            while not self.stopping:
                try:
                    msgs = await self.consumer.fetch(self.settings.fetch_batch,
                                                     self.settings.fetch_timeout_s)
                except BusUnavailable:
                    self.metrics.bus_failures += 1
                    await anyio.sleep(0.25)
                    continue
                if msgs:
                    self.metrics.batches += 1
                    await self.handle(msgs)
                    if len(msgs) < self.settings.fetch_batch // 4 and self.settings.fetch_linger_s:
                        await anyio.sleep(self.settings.fetch_linger_s)
                self.passivate_idle()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_mail()
                self.actors.clear()
                await self.consumer.close()
            self.stopped.set()

    async def _open(self) -> None:
        delay = 0.25
        while True:
            try:
                await self.consumer.open()
                return
            except BusUnavailable:
                self.metrics.bus_failures += 1
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _release_mail(self) -> None:
        """On the way out, hand back what we hold so the next owner gets it without waiting for
        the ack timeout; whatever committed is deduplicated by the inbox on redelivery."""
        with anyio.move_on_after(ACK_TIMEOUT_S):
            for actor in self.actors.values():
                while actor.mailbox:
                    env = actor.mailbox.popleft()
                    await self._settle(env.msg, "nak")
                    self.metrics.redelivery_requested += 1

    # --- one batch -----------------------------------------------------------------------------

    async def handle(self, msgs: Sequence[Msg]) -> None:
        woken: dict[str, AccountActor] = {}
        parked: deque[tuple[AccountActor, Envelope]] = deque()
        now = kept_alive = self.clock.monotonic()
        for msg in msgs:
            self.metrics.received += 1
            try:
                signal = decode_signal(msg.data)
            except CodecError as exc:
                await self._dead_letter(msg, DeadLetterReason.UNDECODABLE, exc)
                continue
            if signal.region != self.region:
                await self._dead_letter(msg, DeadLetterReason.REGION_MISMATCH, None)
                continue
            if msg.subject != inputs_subject(self.region, self.partitions, signal.account_id):
                await self._dead_letter(msg, DeadLetterReason.SUBJECT_MISMATCH, None)
                continue
            actor = self.actors.get(signal.account_id)
            if actor is None:
                actor = AccountActor(signal.account_id, self.settings.mailbox_capacity)
                if self.settings.optimistic_activation:
                    actor.state = initial_state(signal.account_id, self.region)
                    actor.assumed_new = True
                self.actors[signal.account_id] = actor
            actor.last_active = now
            envelope = Envelope(signal, msg)
            if parked:
                parked.append((actor, envelope))  # keep the account's order behind its backlog
                continue
            try:
                actor.offer(envelope)
            except MailboxFull:
                parked.append((actor, envelope))
                continue
            woken[signal.account_id] = actor
        await self._turns(list(woken.values()))
        # Backpressure: a full mailbox parks the rest of the batch, and the partition fetches
        # nothing more until every parked signal has had its turn.
        while parked:
            if self.stopping:
                for _, envelope in parked:  # handed back: the next owner gets them at once
                    self.metrics.redelivery_requested += 1
                    await self._settle(envelope.msg, "nak")
                return
            self.metrics.mailbox_full += 1
            if self.clock.monotonic() - kept_alive > self.settings.consumers.backoff[0] / 3:
                await self._keep_alive_parked(parked)  # still ours: no redelivery meanwhile
                kept_alive = self.clock.monotonic()
            woken = {}
            rest: deque[tuple[AccountActor, Envelope]] = deque()
            while parked:
                actor, envelope = parked.popleft()
                if rest:
                    rest.append((actor, envelope))
                    continue
                try:
                    actor.offer(envelope)
                except MailboxFull:
                    rest.append((actor, envelope))
                    continue
                woken[actor.account_id] = actor
            parked = rest
            await self._turns(list(woken.values()))

    async def _turns(self, actors: list[AccountActor]) -> None:
        delay = self.settings.store_retry_s
        kept_alive = self.clock.monotonic()
        keep_alive_every = self.settings.consumers.backoff[0] / 3
        while True:
            ready = [a for a in actors if a.mailbox]
            if not ready:
                return
            if self.clock.monotonic() - kept_alive > keep_alive_every:
                # A hot account's backlog takes a round per signal: the messages still waiting
                # are ours, so JetStream must not redeliver them to someone else meanwhile.
                await self._keep_alive(ready)
                kept_alive = self.clock.monotonic()
            try:
                await self._round(ready)
                delay = self.settings.store_retry_s
            except StoreFailure as exc:
                self.metrics.store_failures += 1
                log.warning("partition %d: store call failed (%s); retrying in %.1fs",
                            self.partition, exc, delay)
                for a in ready:
                    a.state = None  # the failed call may or may not have committed
                if self.stopping:
                    return  # the finally of run() hands the mail back
                await self._keep_alive(ready)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.settings.store_retry_max_s)

    async def _round(self, ready: list[AccountActor]) -> None:
        await self._load([a for a in ready if a.state is None])
        now = self.clock.now()
        requests: list[AppendRequest] = []
        turns: list[tuple[AccountActor, Envelope, AccountState, tuple[OutboxMessage, ...]]] = []
        for actor in ready:
            env = actor.mailbox[0]
            state = actor.state
            assert state is not None
            try:
                events, after = decide_and_fold(state, env.signal, self.policy, now)
                commands = commands_for(events, self.policy)
            except Exception as exc:  # a decision that fails is a rejected signal, not a crash
                actor.mailbox.popleft()
                await self._reject(env, exc)
                continue
            outbox = tuple(
                OutboxMessage(message_id=c.command_id,
                              subject=enforce_subject(self.region, c.account_id),
                              payload=encode_command(c))
                for c in commands
            )
            requests.append(AppendRequest(account_id=actor.account_id,
                                          expected_version=state.version, events=tuple(events),
                                          inbox_key=env.signal.signal_id, outbox=outbox,
                                          state_after=after))
            turns.append((actor, env, after, outbox))
        if not requests:
            return
        results = await self._append(requests)
        committed_commands: list[OutboxMessage] = []
        to_ack: list[Msg] = []
        for (actor, env, after, outbox), result in zip(turns, results, strict=True):
            if isinstance(result, ConcurrencyConflict):
                if actor.assumed_new:
                    # The guess that the account was new was wrong: load it, no retry counted.
                    actor.assumed_new = False
                    actor.state = None
                    self.metrics.activations_refused += 1
                    continue
                self.metrics.conflicts += 1
                actor.state = None
                env.conflicts += 1
                if env.conflicts > self.settings.max_conflict_retries:
                    # Another writer keeps winning this account: step back and retry later,
                    # unless this is the last delivery JetStream will make.
                    actor.mailbox.popleft()
                    if env.deliveries >= self.settings.consumers.max_deliver:
                        await self._dead_letter(env.msg, DeadLetterReason.REJECTED, result)
                    else:
                        self.metrics.redelivery_requested += 1
                        await self._settle(env.msg, "nak", delay=1.0)
                continue
            actor.mailbox.popleft()
            actor.assumed_new = False
            if result.duplicate:
                self.metrics.duplicates += 1
                actor.state = None  # someone else committed this signal: our state may be behind
            else:
                self.metrics.committed += 1
                actor.state = after
                committed_commands.extend(outbox)
            to_ack.append(env.msg)
        if committed_commands:
            self.on_commands(committed_commands)
        if self.settings.fault_ack_delay_s:
            await anyio.sleep(self.settings.fault_ack_delay_s)
        await self._ack_all(to_ack)

    async def _load(self, actors: list[AccountActor]) -> None:
        if not actors:
            return
        failures: list[BaseException] = []
        limiter = anyio.CapacityLimiter(self.settings.load_concurrency)

        async def load_one(actor: AccountActor) -> None:
            async with limiter:
                try:
                    with anyio.fail_after(self.settings.store_timeout_s):
                        actor.state = await self.store.load(actor.account_id)
                    actor.assumed_new = False
                    self.metrics.loads += 1
                except Exception as exc:
                    if not is_store_failure(exc):
                        raise
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for actor in actors:
                tg.start_soon(load_one, actor)
        if failures:
            raise StoreFailure(f"load: {type(failures[0]).__name__}")

    async def _append(self, requests: list[AppendRequest]
                      ) -> list[AppendResult | ConcurrencyConflict]:
        try:
            if self.committer is not None:
                return await self.committer.append(requests)
            with anyio.fail_after(self.settings.store_timeout_s):
                return await self.store.append_batch(requests)
        except Exception as exc:
            if is_store_failure(exc):
                raise StoreFailure(f"append: {type(exc).__name__}") from exc
            raise

    # --- poison, rejects, acks -----------------------------------------------------------------

    async def _reject(self, env: Envelope, exc: Exception) -> None:
        if env.deliveries >= self.settings.reject_after_deliveries:
            await self._dead_letter(env.msg, DeadLetterReason.REJECTED, exc)
        else:
            log.warning("partition %d: decision failed (%s), delivery %d; retrying later",
                        self.partition, type(exc).__name__, env.deliveries)
            self.metrics.redelivery_requested += 1
            await self._settle(env.msg, "nak", delay=1.0)

    async def _dead_letter(self, msg: Msg, reason: DeadLetterReason,
                           error: BaseException | None) -> None:
        try:
            await self.dead_letters.send(msg, self._source, reason, error)
        except BusUnavailable:
            # Not confirmed: leave it unacked, so it comes back and is dead-lettered then.
            self.metrics.bus_failures += 1
            return
        self.metrics.dead_lettered += 1
        await self._settle(msg, "term")

    async def _settle(self, msg: Msg, how: str, delay: float | None = None) -> None:
        """Ack, nak or terminate. A lost ack only means a redelivery the inbox deduplicates."""
        try:
            with anyio.fail_after(ACK_TIMEOUT_S):
                if how == "ack":
                    await msg.ack()
                elif how == "nak":
                    await msg.nak(delay=delay)
                else:
                    await msg.term()
        except (TimeoutError, nats.errors.Error):
            self.metrics.bus_failures += 1

    async def _ack_all(self, msgs: list[Msg]) -> None:
        """Acks are buffered publishes: one deadline for the lot, not one per message."""
        done = 0
        try:
            with anyio.fail_after(ACK_TIMEOUT_S):
                for msg in msgs:
                    done += 1
                    try:
                        await msg.ack()
                    except nats.errors.Error:
                        self.metrics.bus_failures += 1  # redelivered, then deduplicated
        except TimeoutError:
            self.metrics.bus_failures += len(msgs) - done

    async def _keep_alive_parked(self, parked: deque[tuple[AccountActor, Envelope]]) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error), anyio.fail_after(ACK_TIMEOUT_S):
            for _, env in parked:
                await env.msg.in_progress()
            await self.consumer.keep_alive()

    async def _keep_alive(self, actors: list[AccountActor]) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error), anyio.fail_after(ACK_TIMEOUT_S):
            for actor in actors:
                for env in actor.mailbox:
                    await env.msg.in_progress()
            await self.consumer.keep_alive()

    # --- passivation ---------------------------------------------------------------------------

    def passivate_idle(self) -> None:
        now = self.clock.monotonic()
        if now - self._last_passivation < 1.0:
            return
        self._last_passivation = now
        cutoff = now - self.settings.passivate_after_s
        idle = [k for k, a in self.actors.items() if a.idle and a.last_active < cutoff]
        for key in idle:
            del self.actors[key]
        self.metrics.passivated += len(idle)
