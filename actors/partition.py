"""One partition of a node: fetch its signals, route them to account actors, take part in the
node's group commits, ack.

An actor with mail is *ready* once its state is in memory (a new account starts from the initial
state; an existing one is loaded: snapshot plus tail, by the partition's loader). Each cycle of
the node's ``GroupCommitter`` takes a round from every partition: the head signal of each ready
actor, decided on the actor's state, one append per account. While a cycle commits, the
partitions keep fetching and routing, so a signal waits for at most the cycle in progress, and a
hot account's next signal is decided on the state its previous one committed. A signal is acked
only after the transaction holding its inbox key, events and outbox rows committed, or after the
store said the inbox already held it. A lost version race reloads the account and decides
again; a failed store call drops the round's states (they are reloaded) and the committer backs
off, while held messages are kept alive (``in_progress``), so an outage becomes backpressure
rather than redelivery.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import nats.errors
from nats.aio.msg import Msg

from safeguards.actors.actor import AccountActor, Envelope, MailboxFull
from safeguards.actors.clock import Clock
from safeguards.actors.commit import ACK_TIMEOUT_S, GroupCommitter, Result
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
from safeguards.core.ports import AppendRequest, EventStore, OutboxMessage
from safeguards.core.state import AccountState, initial_state
from safeguards.core.subjects import enforce_subject, inputs_subject

log = logging.getLogger(__name__)

def is_store_failure(exc: BaseException) -> bool:
    if isinstance(exc, SafeguardsError):
        return exc.retryable and not isinstance(exc, ConcurrencyConflict)
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


@dataclass(slots=True)
class Round:
    """What one partition brings to one commit cycle: a decided head signal per ready actor."""

    worker: PartitionWorker
    turns: list[tuple[AccountActor, Envelope, AccountState]] = field(default_factory=list)
    requests: list[AppendRequest] = field(default_factory=list)
    rejected: list[tuple[AccountActor, Envelope, Exception]] = field(default_factory=list)


class PartitionWorker:
    def __init__(self, *, region: str, partitions: int, partition: int, store: EventStore,
                 consumer: PartitionConsumer, dead_letters: DeadLetters, policy: Policy,
                 clock: Clock, settings: NodeSettings, metrics: NodeMetrics,
                 committer: GroupCommitter) -> None:
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
        self.committer = committer
        self.actors: dict[str, AccountActor] = {}
        self._stop = anyio.Event()
        self.stopped = anyio.Event()
        self._source = f"acct-p{partition}"
        self._last_passivation = 0.0
        self._kept_alive = 0.0
        # Every actor holding mail, and those of them that wait for a decision or for a load
        # (an actor with a turn in a commit cycle is in neither, until the cycle ends).
        self._holding: dict[str, AccountActor] = {}
        self._ready: dict[str, AccountActor] = {}
        self._unloaded: dict[str, AccountActor] = {}
        self._held = 0  # signals in mailboxes (parked ones excluded)
        # Signals behind a full mailbox, in arrival order: nothing more is fetched meanwhile.
        self._parked: deque[tuple[AccountActor, Envelope]] = deque()
        self._in_cycle = False  # a round of ours is in a commit cycle
        self._room = anyio.Event()  # a round ended: the intake may fetch again
        self._load_wanted = anyio.Event()
        self._load_delay = settings.store_retry_s
        self._new_accounts = 1.0  # moving share of first-seen accounts that were new

    def request_stop(self) -> None:
        """Finish the round in a commit cycle, then stop (graceful drain); mail that has not had
        its turn is handed back to JetStream for the partition's next owner."""
        self._stop.set()
        self.consumer.interrupt()
        self._room.set()
        self._load_wanted.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            await self._open()
            self.committer.register(self)
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._loader)
                await self._intake()
                tg.cancel_scope.cancel()
            # The round in a cycle commits and is acked; the committer takes no new one.
            while self._in_cycle:
                self._room = anyio.Event()
                await self._room.wait()
        finally:
            self.committer.unregister(self)
            with anyio.CancelScope(shield=True):
                await self._release_mail()
                self.actors.clear()
                await self.consumer.close()
            self.stopped.set()

    async def _intake(self) -> None:
        keep_alive_every = self.settings.consumers.backoff[0] / 3
        while not self.stopping:
            if self.clock.monotonic() - self._kept_alive > keep_alive_every:
                await self._keep_alive_mail(keep_alive_every)
            if self._parked or self._held >= 2 * self.settings.fetch_batch:
                # Backpressure: nothing more is fetched until rounds make room (up to one batch
                # is routed while the cycle in progress commits, ready for the next one).
                with anyio.move_on_after(keep_alive_every):
                    await self._room.wait()
                self._room = anyio.Event()
                continue
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
            self.passivate_idle()

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
            for env in self._mail():
                await self._settle(env.msg, "nak")
                self.metrics.redelivery_requested += 1
        for actor in self._holding.values():
            actor.mailbox.clear()
        self._held = 0
        self._holding.clear()
        self._ready.clear()
        self._unloaded.clear()
        self._parked.clear()

    def _mail(self) -> list[Envelope]:
        """Every signal held and not yet acked: in mailboxes, then parked."""
        held = [env for a in self._holding.values() for env in a.mailbox]
        return held + [env for _, env in self._parked]

    # --- routing -------------------------------------------------------------------------------

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Route a fetched batch to its accounts' mailboxes; the ready ones join the next
        commit cycle."""
        now = self.clock.monotonic()
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
            actor = self.actors.get(signal.account_id)
            subject = actor.subject if actor is not None else inputs_subject(
                self.region, self.partitions, signal.account_id)
            if msg.subject != subject:
                await self._dead_letter(msg, DeadLetterReason.SUBJECT_MISMATCH, None)
                continue
            if actor is None:
                actor = AccountActor(signal.account_id, self.settings.mailbox_capacity, subject)
                if self.settings.optimistic_activation and self._new_accounts >= 0.5:
                    actor.state = initial_state(signal.account_id, self.region)
                    actor.assumed_new = True
                else:
                    actor.activating = True  # loaded first; the load tells whether it was new
                self.actors[signal.account_id] = actor
            actor.last_active = now
            envelope = Envelope(signal, msg, since=now)
            if self._parked:
                self._parked.append((actor, envelope))  # keeps the order behind the backlog
                continue
            try:
                actor.offer(envelope)
            except MailboxFull:
                self.metrics.mailbox_full += 1
                self._parked.append((actor, envelope))
                continue
            self._held += 1
            self._wake(actor)

    def _wake(self, actor: AccountActor) -> None:
        """An actor with mail and no turn in flight: ready, or due a load first."""
        key = actor.account_id
        self._holding[key] = actor
        if actor.in_turn or actor.loading:
            return  # the turn's end, or the load's, wakes it again
        if actor.state is None:
            self._unloaded[key] = actor
            self._load_wanted.set()
        else:
            self._ready[key] = actor
            self.committer.wake()

    def _unpark(self) -> None:
        rest: deque[tuple[AccountActor, Envelope]] = deque()
        while self._parked:
            actor, envelope = self._parked.popleft()
            if rest:
                rest.append((actor, envelope))
                continue
            try:
                actor.offer(envelope)
            except MailboxFull:
                rest.append((actor, envelope))
                continue
            self._held += 1
            self._wake(actor)
        self._parked = rest

    # --- loads ---------------------------------------------------------------------------------

    async def _loader(self) -> None:
        """Loads the state of actors that have mail and none in memory (an account seen for the
        first time without optimistic activation, a refused activation, a lost race, a failed
        store call); a failed load is retried with backoff."""
        while True:
            await self._load_wanted.wait()
            self._load_wanted = anyio.Event()
            if self.stopping:
                return
            actors = list(self._unloaded.values())
            self._unloaded.clear()
            if not actors:
                continue
            for actor in actors:
                actor.loading = True
            try:
                failed = await self._load(actors)
            finally:
                for actor in actors:
                    actor.loading = False
            for actor in actors:
                if actor.mailbox and actor.account_id in self._holding:
                    self._wake(actor)  # ready, or back among the unloaded when its load failed
            if failed:
                self.metrics.store_failures += 1
                log.warning("partition %d: loading %d account(s) failed (%s); retrying in %.1fs",
                            self.partition, failed[1], failed[0], self._load_delay)
                await anyio.sleep(self._load_delay)
                self._load_delay = min(self._load_delay * 2, self.settings.store_retry_max_s)
            else:
                self._load_delay = self.settings.store_retry_s

    async def _load(self, actors: list[AccountActor]) -> tuple[str, int] | None:
        """Reads the states, ``load_batch`` accounts per store call and ``load_concurrency``
        calls at once; returns (error, accounts not loaded) when some call failed."""
        failures: list[tuple[BaseException, int]] = []
        limiter = anyio.CapacityLimiter(self.settings.load_concurrency)

        async def load_chunk(chunk: list[AccountActor]) -> None:
            async with limiter:
                try:
                    with anyio.fail_after(self.settings.store_timeout_s):
                        states = await self.store.load_many([a.account_id for a in chunk])
                except Exception as exc:
                    if not is_store_failure(exc):
                        raise
                    failures.append((exc, len(chunk)))
                    return
                for actor in chunk:
                    actor.state = states[actor.account_id]
                    actor.assumed_new = False
                    if actor.activating:
                        actor.activating = False
                        self._learn_activation(new=actor.state.version == 0)
                self.metrics.loads += len(chunk)

        size = self.settings.load_batch
        async with anyio.create_task_group() as tg:
            for i in range(0, len(actors), size):
                tg.start_soon(load_chunk, actors[i:i + size])
        if not failures:
            return None
        return type(failures[0][0]).__name__, sum(n for _, n in failures)

    def _learn_activation(self, *, new: bool) -> None:
        """Follow how often a first-seen account turns out to be new (a moving average over
        about the last 20): while most are, activate on the initial state and save the load;
        once most are not (a node that took over partitions, or restarted), load first and save
        the refused append."""
        was = self._new_accounts
        self._new_accounts = 0.95 * was + (0.05 if new else 0.0)
        if was >= 0.5 > self._new_accounts:
            # Guessed actors still waiting for their first decision are most likely existing
            # accounts too: load them rather than spend an append on each.
            for key, actor in list(self._ready.items()):
                if actor.assumed_new:
                    del self._ready[key]
                    actor.state, actor.assumed_new, actor.activating = None, False, True
                    self._wake(actor)

    # --- rounds (called by the committer) ------------------------------------------------------

    def take_round(self, limit: int) -> Round | None:
        """This partition's part of the commit cycle that starts now: the head signal of each
        ready actor (at most ``limit``, longest ready first), decided on its state (pure CPU, no
        await, so the cycle starts at once)."""
        if not self._ready or self.stopping:
            return None
        if len(self._ready) <= limit:
            actors = list(self._ready.values())
            self._ready.clear()
        else:
            actors = [self._ready.pop(key) for key in list(itertools.islice(self._ready, limit))]
        rnd = Round(self)
        now = self.clock.now()
        for actor in actors:
            state = actor.state
            if state is None or not actor.mailbox:  # not expected: every path wakes it again
                if actor.mailbox:
                    self._wake(actor)  # to the loader
                continue
            env = actor.mailbox[0]
            try:
                events, after = decide_and_fold(state, env.signal, self.policy, now)
                commands = commands_for(events, self.policy)
            except Exception as exc:  # a decision that fails is a rejected signal, not a crash
                self._pop(actor, env)
                actor.in_turn = True
                rnd.rejected.append((actor, env, exc))
                continue
            outbox = tuple(
                OutboxMessage(message_id=c.command_id,
                              subject=enforce_subject(self.region, c.account_id),
                              payload=encode_command(c))
                for c in commands
            )
            rnd.requests.append(AppendRequest(account_id=actor.account_id,
                                              expected_version=state.version,
                                              events=tuple(events),
                                              inbox_key=env.signal.signal_id, outbox=outbox,
                                              state_after=after))
            rnd.turns.append((actor, env, after))
            actor.in_turn = True
        self._in_cycle = True
        return rnd

    async def finish_round(self, rnd: Round, results: Sequence[Result] | None) -> list[Msg]:
        """The cycle committed (``results``, in request order) or failed (None: nothing is
        known, so the states are dropped and reloaded). Returns the messages to ack: the
        committer acks every partition's at once."""
        to_ack: list[Msg] = []
        to_nak: list[Envelope] = []
        to_dead_letter: list[tuple[Envelope, ConcurrencyConflict]] = []
        if results is None:
            for actor, _, _ in rnd.turns:
                actor.state = None  # the failed call may or may not have committed
        else:
            for (actor, env, after), result in zip(rnd.turns, results, strict=True):
                if isinstance(result, ConcurrencyConflict):
                    if actor.assumed_new:
                        # The guess that the account was new was wrong: load it, no retry
                        # counted.
                        actor.assumed_new = False
                        actor.state = None
                        self.metrics.activations_refused += 1
                        self._learn_activation(new=False)
                        continue
                    self.metrics.conflicts += 1
                    actor.state = None
                    env.conflicts += 1
                    if env.conflicts > self.settings.max_conflict_retries:
                        # Another writer keeps winning this account: step back and retry
                        # later, unless this is the last delivery JetStream will make.
                        self._pop(actor, env)
                        if env.deliveries >= self.settings.consumers.max_deliver:
                            to_dead_letter.append((env, result))
                        else:
                            to_nak.append(env)
                    continue
                self._pop(actor, env)
                if actor.assumed_new:
                    actor.assumed_new = False
                    self._learn_activation(new=True)
                if result.duplicate:
                    self.metrics.duplicates += 1
                    actor.state = None  # another node committed this signal: ours may be behind
                else:
                    self.metrics.committed += 1
                    actor.state = after
                to_ack.append(env.msg)
        for actor in [t[0] for t in rnd.turns] + [r[0] for r in rnd.rejected]:
            actor.in_turn = False
            if actor.mailbox:
                self._wake(actor)
            else:
                self._holding.pop(actor.account_id, None)
        self._unpark()
        for _, env, exc in rnd.rejected:
            await self._reject(env, exc)
        for env, conflict in to_dead_letter:
            await self._dead_letter(env.msg, DeadLetterReason.REJECTED, conflict)
        for env in to_nak:
            self.metrics.redelivery_requested += 1
            await self._settle(env.msg, "nak", delay=1.0)
        return to_ack

    def _pop(self, actor: AccountActor, env: Envelope) -> None:
        """Take a decided signal off its mailbox (unless a partition that lost its lease already
        handed its mail back while the cycle committed)."""
        if actor.mailbox and actor.mailbox[0] is env:
            actor.mailbox.popleft()
            self._held -= 1

    def cycle_ended(self) -> None:
        """The committer is done with our round (finished, or abandoned when it was cancelled)."""
        self._in_cycle = False
        self._room.set()

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    # --- poison, rejects, acks -----------------------------------------------------------------

    async def _reject(self, env: Envelope, exc: Exception) -> None:
        # A domain error (a signal the account's history refuses) is a rejected input; anything
        # else is a bug in deciding: loud, with its traceback, and dead-lettered under its own
        # reason so it is never mistaken for bad input. Either way only this signal waits.
        bug = not isinstance(exc, SafeguardsError)
        if bug:
            self.metrics.decide_errors += 1
            log.error("partition %d: deciding failed with a coding error (delivery %d)",
                      self.partition, env.deliveries, exc_info=exc)
        if env.deliveries >= self.settings.reject_after_deliveries:
            await self._dead_letter(env.msg, DeadLetterReason.DECIDE_FAILED if bug
                                    else DeadLetterReason.REJECTED, exc)
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

    async def _keep_alive_mail(self, older_than_s: float) -> None:
        """Tell JetStream that signals held longer than ``older_than_s`` (a hot account's
        backlog, a store outage, a full mailbox) are still ours, so none is redelivered to
        someone else meanwhile; the consumer does the same for what it buffers."""
        now = self._kept_alive = self.clock.monotonic()
        with contextlib.suppress(TimeoutError, nats.errors.Error), anyio.fail_after(ACK_TIMEOUT_S):
            for env in self._mail():
                if now - env.since > older_than_s:
                    await env.msg.in_progress()
                    env.since = now
            await self.consumer.keep_alive()

    # --- passivation ---------------------------------------------------------------------------

    def passivate_idle(self) -> None:
        now = self.clock.monotonic()
        if self._parked or now - self._last_passivation < 1.0:
            # (A parked signal holds its actor: that actor must stay the account's only one.)
            return
        self._last_passivation = now
        cutoff = now - self.settings.passivate_after_s
        idle = [k for k, a in self.actors.items() if a.idle and a.last_active < cutoff]
        for key in idle:
            del self.actors[key]
        self.metrics.passivated += len(idle)
