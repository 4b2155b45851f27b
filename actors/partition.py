"""One partition of a node: fetch its signals, route them to account actors, take part in the
node's group commits, ack.

An actor with mail is *ready* once its state is in memory (a new account starts from the initial
state; an existing one is loaded: snapshot plus tail, by the partition's loader). Each cycle of
the node's ``GroupCommitter`` takes a round from every partition: each ready actor's waiting
signals (``turns``), decided in order from its state, one append per signal. While a cycle
commits, the partitions keep fetching and routing, so a signal waits for at most the cycle in
progress, and a hot account's next signals are decided on the state it committed. A signal is acked
only after the transaction holding its inbox key, events and outbox rows committed, or after the
store said the inbox already held it. A lost version race reloads the account and decides
again; a failed store call drops the round's states (they are reloaded) and the committer backs
off, while held messages are kept alive (``in_progress``), so an outage becomes backpressure
rather than redelivery.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence

import anyio

from safeguards.actors.actor import AccountActor, Envelope, MailboxFull
from safeguards.actors.backoff import StoreBackoff
from safeguards.actors.clock import Clock
from safeguards.actors.commit import GroupCommitter, Result, StoreRefused
from safeguards.actors.loading import ActivationGuess, load_states
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.quarantine import park_mail, still_quarantined
from safeguards.actors.settings import NodeSettings
from safeguards.actors.settlement import MailSettlement
from safeguards.actors.turns import Round
from safeguards.core.bus import BusUnavailable, InboundMessage, RegionBus
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.operators import InputChecks
from safeguards.core.policy import Policy
from safeguards.core.ports import EventStore
from safeguards.core.state import initial_state
from safeguards.core.subjects import inputs_subject

log = logging.getLogger(__name__)


class PartitionWorker:
    def __init__(self, *, region: str, partitions: int, partition: int, store: EventStore,
                 bus: RegionBus, policy: Policy, checks: InputChecks, clock: Clock,
                 settings: NodeSettings, metrics: NodeMetrics, committer: GroupCommitter) -> None:
        self.region = region
        self.partitions = partitions
        self.partition = partition
        self.store = store
        self.consumer = bus.signal_source(partition)
        self.bus = bus
        self.policy = policy
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.committer = committer
        self.actors: dict[str, AccountActor] = {}
        self._stop = anyio.Event()
        self.stopped = anyio.Event()
        self.settlement = MailSettlement(partition, bus.dead_letters, settings, metrics, checks)
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
        self._load_backoff = StoreBackoff(settings.store_retry_s, settings.store_retry_max_s)
        self._activation = ActivationGuess()

    def request_stop(self) -> None:
        """Finish the round in a commit cycle, then stop; untaken mail goes back to JetStream."""
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
        keep_alive_every = self.bus.ack_wait_s / 3
        while not self.stopping:
            if self.clock.monotonic() - self._kept_alive > keep_alive_every:
                self._kept_alive = self.clock.monotonic()
                await self.settlement.keep_alive(self._mail(), self.consumer, self._kept_alive,
                                                 keep_alive_every)
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
                delay = min(delay * 2, 1.0)  # each try waits out its own API timeout

    async def _release_mail(self) -> None:
        """On the way out, hand back what we hold to the partition's next owner."""
        await self.settlement.release(self._mail())
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

    async def handle(self, msgs: Sequence[InboundMessage]) -> None:
        """Route a fetched batch to its accounts' mailboxes; the ready ones join the next
        commit cycle."""
        now = self.clock.monotonic()
        for msg in msgs:
            self.metrics.received += 1
            signal = await self.settlement.admit(msg, self.region, self._subject_of)
            if signal is None:
                continue  # poison: dead-lettered alone with its reason
            actor = self.actors.get(signal.account_id)
            if actor is None:
                actor = AccountActor(signal.account_id, self.settings.mailbox_capacity,
                                     self._subject_of(signal.account_id))
                if self.settings.optimistic_activation and self._activation.assume_new:
                    actor.state = initial_state(signal.account_id, self.region)
                    actor.assumed_new = True
                else:
                    actor.activating = True  # loaded first; the load tells whether it was new
                self.actors[signal.account_id] = actor
            actor.last_active = now
            if still_quarantined(actor, now, self.settings):  # unreadable history: park
                await park_mail(actor, {}, self.settlement, msg)
                continue
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

    def _subject_of(self, account_id: str) -> str:
        actor = self.actors.get(account_id)
        return actor.subject if actor is not None else inputs_subject(
            self.region, self.partitions, account_id)

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
        """Loads the state of actors that have mail and none in memory (first seen without
        optimistic activation, refused activation, lost race, failed store call), with backoff."""
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
                failed = await load_states(self.store, actors, self.settings, self.metrics,
                                           self._learn_activation)
            finally:
                for actor in actors:
                    actor.loading = False
            for actor in actors:
                if actor.quarantined is not None:  # unreadable history (``quarantine``)
                    self._held -= await park_mail(actor, self._holding, self.settlement)
                    self._unpark()
                elif actor.mailbox and actor.account_id in self._holding:
                    self._wake(actor)  # ready, or back among the unloaded when its load failed
            if failed:
                self.metrics.store_failures += 1
                delay = self._load_backoff.failed()
                self._load_backoff.log_failure(log, "partition %d: loading %d account(s) failed "
                                               "(%s)", self.partition, failed[1], failed[0])
                await anyio.sleep(delay)
            elif self._load_backoff.succeeded(log, "partition %d: loads", self.partition):
                self.committer.store_answered()  # its own wait need not run out

    def _learn_activation(self, new: bool) -> None:
        if self._activation.learn(new):
            # Guessed actors still waiting for their first decision are most likely existing
            # accounts too: load them rather than spend an append on each.
            for key, actor in list(self._ready.items()):
                if actor.assumed_new:
                    del self._ready[key]
                    actor.state, actor.assumed_new, actor.activating = None, False, True
                    self._wake(actor)

    # --- rounds (called by the committer) ------------------------------------------------------

    def take_round(self, limit: int) -> Round | None:
        """This partition's part of the commit cycle that starts now: the head signals of each
        ready actor (at most ``limit`` appends, longest ready first), decided on its state (pure
        CPU, no await, so the cycle starts at once)."""
        if not self._ready or self.stopping:
            return None
        if len(self._ready) <= limit:
            actors = list(self._ready.values())
            self._ready.clear()
        else:
            actors = [self._ready.pop(key) for key in list(itertools.islice(self._ready, limit))]
        rnd, now = Round(self), self.clock.now()
        per_actor = min(self.settings.turn_signals, limit // len(actors))  # the cycle's share
        for actor in actors:
            state = actor.state
            if state is None or not actor.mailbox:  # not expected: every path wakes it again
                if actor.mailbox:
                    self._wake(actor)  # to the loader
                continue
            rejected = rnd.decide_turn(actor, state, now, per_actor)
            if rejected is not None:  # it leaves the mailbox now
                self._pop(actor, rejected)
            actor.in_turn = True
        self._in_cycle = True
        return rnd

    async def finish_round(self, rnd: Round, results: Sequence[Result] | None
                           ) -> list[InboundMessage]:
        """The cycle committed (``results``, in request order) or failed (None: nothing is
        known, so the states are dropped and reloaded). Returns the messages to ack: the
        committer acks every partition's at once."""
        to_ack: list[InboundMessage] = []
        to_nak: list[Envelope] = []
        to_dead_letter: list[tuple[Envelope, ConcurrencyConflict | StoreRefused]] = []
        if results is None:
            for actor, _, _ in rnd.turns:
                actor.state = None  # the failed call may or may not have committed
        else:
            for (actor, env, after), result in zip(rnd.turns, results, strict=True):
                if isinstance(result, StoreRefused):
                    self._pop(actor, env)
                    actor.state = None  # nothing of it was written: reload on the next signal
                    to_dead_letter.append((env, result))
                    continue
                if isinstance(result, ConcurrencyConflict):
                    if actor.assumed_new:  # the guess that it was new was wrong: load it
                        actor.assumed_new = False
                        actor.state = None
                        self.metrics.activations_refused += 1
                        self._learn_activation(new=False)
                        continue
                    self.metrics.conflicts += 1
                    actor.state = None
                    env.conflicts += 1
                    if env.conflicts > self.settings.max_conflict_retries:
                        # Another writer keeps winning it: retry later, unless last delivery.
                        self._pop(actor, env)
                        if env.deliveries >= self.bus.max_deliveries:
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
        await self.settlement.settle_round(rnd.rejected, to_dead_letter, to_nak)
        return to_ack

    def _pop(self, actor: AccountActor, env: Envelope) -> None:
        """Take a decided signal off its mailbox (unless a revoked partition handed it back)."""
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

    def passivate_idle(self) -> None:
        """Forget actors idle for ``passivate_after_s`` (their state is in the store)."""
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
