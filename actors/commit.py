"""Group commit across the partitions of a node: one store transaction per cycle.

The regional store orders its feed under one lock, so many small concurrent transactions mostly
wait for each other. So the node commits in cycles: each cycle takes a round from every
partition (the waiting signals of each of its ready actors, decided at once), appends them all with
one ``append_batch``, and hands the results back. While a cycle commits, the partitions fetch and
route what arrives, and the next cycle starts the moment this one ends with whatever is ready
then: a signal waits for at most the cycle in progress, and the node's transactions grow with its
load instead of its partition count. A cycle carries at most ``max_appends``, shared evenly by
the partitions, so one partition's backlog cannot make a cycle that keeps the others waiting. A
cycle after an idle spell waits ``linger_s`` for more work when it would be small (fewer, larger
transactions cost less CPU per signal); a backlog never waits.

The enforcement commands a cycle committed go to ``on_committed`` (the relay's fast path) before
any partition decides again, and before the cycle's acks (one deadline for them all), so they
are published first. A store failure fails every round of the cycle (their states are reloaded)
and the next cycle waits out a backoff (``backoff``), cut short when a partition's load succeeds
again. A batch the store refuses as a whole as malformed (a bug, not a race) is split by round,
then by request, so only the signal behind the request the store refuses is set aside:
dead-lettered alone with the store's reason (``store_refused``), never failing the cycle's other
accounts or the node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from safeguards.actors import tracing
from safeguards.actors.backoff import StoreBackoff
from safeguards.actors.metrics import NodeMetrics
from safeguards.core.bus import BusUnavailable, InboundMessage
from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.ports import AppendRequest, AppendResult, EventStore, OutboxMessage

if TYPE_CHECKING:
    from safeguards.actors.partition import PartitionWorker
    from safeguards.actors.turns import Round

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 2.0



class StoreRefused:
    """One request the store refused as malformed (not a race, not an outage): its signal is
    dead-lettered alone with the store's reason."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Result = AppendResult | ConcurrencyConflict | StoreRefused


class GroupCommitter:
    def __init__(self, store: EventStore, *, timeout_s: float, max_appends: int = 4096,
                 linger_s: float = 0.0, linger_below: int = 128, retry_s: float = 0.1,
                 retry_max_s: float = 0.5,
                 is_store_failure: Callable[[BaseException], bool] = lambda _: False,
                 on_committed: Callable[[Sequence[OutboxMessage]], None] = lambda _: None,
                 metrics: NodeMetrics | None = None, ack_delay_s: float = 0.0) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.max_appends = max_appends  # per cycle, shared evenly by the partitions
        self.linger_s = linger_s
        self.linger_below = linger_below
        self.backoff = StoreBackoff(retry_s, retry_max_s)
        self._answered = anyio.Event()  # a partition's load succeeded after failing
        self.is_store_failure = is_store_failure
        self.on_committed = on_committed
        self.metrics = metrics or NodeMetrics()  # store failures, acks that were not sent
        self.ack_delay_s = ack_delay_s  # fault injection only: hold each cycle's acks this long
        self._sources: dict[int, PartitionWorker] = {}
        self._wake = anyio.Event()
        self.cycles = 0

    def register(self, worker: PartitionWorker) -> None:
        self._sources[id(worker)] = worker

    def unregister(self, worker: PartitionWorker) -> None:
        self._sources.pop(id(worker), None)

    def wake(self) -> None:
        """A partition has a ready actor: start a cycle (at once, or after the one running)."""
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self.linger_s and self._ready_count() < self.linger_below:
                await anyio.sleep(self.linger_s)
            while True:
                sources = list(self._sources.values())
                share = max(1, self.max_appends // max(1, len(sources)))
                rounds = [r for w in sources if (r := w.take_round(share))]
                if not rounds:
                    break
                if await self._cycle(rounds):
                    self.backoff.succeeded(log, "group commit: the store answers")
                else:
                    self.metrics.store_failures += 1
                    delay = self.backoff.failed()
                    self.backoff.log_failure(log, "group commit failed (the store is "
                                             "unavailable); the accounts are reloaded")
                    self._answered = anyio.Event()
                    with anyio.move_on_after(delay):
                        await self._answered.wait()
            # What woke us meanwhile was taken by the loop above, unless it came after.

    def store_answered(self) -> None:
        """A partition's load succeeded after failing: the store is back, so a cycle waiting
        out its backoff (the accounts its failure unloaded are ready again) starts now."""
        self._answered.set()

    def _ready_count(self) -> int:
        return sum(w.ready_count for w in self._sources.values())

    async def _cycle(self, rounds: list[Round]) -> bool:
        """Commit and finish the rounds; False when the store failed (the caller backs off)."""
        self.cycles += 1
        started_ns = time.time_ns()
        results = await self._append(rounds)
        if tracing.TRACER is not None:  # before any await: the relay's fast path reads them
            for rnd, outcome in zip(rounds, results, strict=True):
                if rnd.traces:
                    tracing.committed(rnd.requests, rnd.traces, outcome, started_ns)
        ok = True
        acks: list[InboundMessage] = []
        try:
            for rnd, outcome in zip(rounds, results, strict=True):
                if isinstance(outcome, BaseException):
                    if not self.is_store_failure(outcome):
                        raise outcome
                    ok = False
                    await rnd.worker.finish_round(rnd, None)
                else:
                    acks += await rnd.worker.finish_round(rnd, outcome)
            if self.ack_delay_s:
                await anyio.sleep(self.ack_delay_s)
            await self._ack(acks)
        finally:
            for rnd in rounds:
                rnd.worker.cycle_ended()
        return ok

    async def _ack(self, msgs: list[InboundMessage]) -> None:
        """Acks are buffered publishes: one deadline for the cycle's lot. A lost ack only means
        a redelivery that the inbox deduplicates."""
        done = 0
        try:
            with anyio.fail_after(ACK_TIMEOUT_S):
                for msg in msgs:
                    done += 1
                    try:
                        await msg.ack()
                    except BusUnavailable:
                        self.metrics.bus_failures += 1
        except TimeoutError:
            self.metrics.bus_failures += len(msgs) - done

    async def _append(self, rounds: list[Round]) -> list[list[Result] | BaseException]:
        """Each round's results, or the exception that failed it."""
        merged = [r for rnd in rounds for r in rnd.requests]
        if not merged:
            return [[] for _ in rounds]
        try:
            with anyio.fail_after(self.timeout_s):
                results: Sequence[Result] = await self.store.append_batch(merged)
        except Exception as exc:
            if not getattr(exc, "retryable", True):
                # The store refuses the batch as malformed (a request it cannot hold): commit
                # the rounds, then the requests, one by one, so only the signal behind the
                # refused request is set aside; the rest of the cycle commits.
                log.error("group commit refused (%s): committing its %s one by one",
                          type(exc).__name__, "rounds" if len(rounds) > 1 else "requests")
                if len(rounds) > 1:
                    return [outcome for rnd in rounds for outcome in await self._append([rnd])]
                return [await self._append_alone(rounds[0].requests)]
            if not self.is_store_failure(exc):
                log.error("group commit failed: %s", type(exc).__name__)
            return [exc for _ in rounds]
        self._committed(merged, results)
        out: list[list[Result] | BaseException] = []
        i = 0
        for rnd in rounds:
            n = len(rnd.requests)
            out.append(list(results[i:i + n]))
            i += n
        return out

    async def _append_alone(self, requests: Sequence[AppendRequest]
                            ) -> list[Result] | BaseException:
        """A refused round's requests, each in its own append: its result, or the refusal that
        names the one request the store will never take (a store failure fails the round)."""
        results: list[Result] = []
        for request in requests:
            try:
                with anyio.fail_after(self.timeout_s):
                    (result,) = await self.store.append_batch([request])
            except Exception as exc:
                if getattr(exc, "retryable", True):
                    return exc
                self.metrics.store_refused += 1
                log.error("the store refused one account's append (%s); its signal is "
                          "dead-lettered", type(exc).__name__, exc_info=exc)
                results.append(StoreRefused(exc))
                continue
            self._committed([request], [result])
            results.append(result)
        return results

    def _committed(self, requests: Sequence[AppendRequest], results: Sequence[Result]) -> None:
        commands = [m for request, result in zip(requests, results, strict=True)
                    if isinstance(result, AppendResult) and not result.duplicate
                    for m in request.outbox]
        if commands:
            self.on_committed(commands)
