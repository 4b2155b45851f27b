"""Dynamic micro-batching in front of one loaded model.

Callers ``await scorer.score(text)``; requests wait in a bounded queue (a full queue raises the
typed :class:`ScorerOverloaded` after ``enqueue_timeout_s`` of backpressure, never a silent drop).
A collector takes the first waiting request, then gathers more until ``max_batch`` windows or
``max_wait_s`` have passed, sorts them into length buckets (so short texts are not padded or
slowed by long ones), and hands each bucket to an inference worker. Inference runs in a worker
thread (``anyio.to_thread``), so the event loop stays free while ONNX Runtime computes. While a
batch runs, the collector keeps gathering the next one: under load, batches grow by themselves.

The gates' inline scoring and the content stream's background scoring share one model and the
same cores. An :class:`InferenceLane` shared by both puts the gates first: the inline scorer holds
the lane while it has work, and the background scorer, before each of its (small) batches, waits
for the lane to be free, at most ``yield_limit_s`` so it is never starved. A screening deadline of
tens of milliseconds then does not depend on how much content is waiting to be scored.

Not all background content is equally pressing: a request marked ``urgent`` (the content
stream's triage: a fresh account's, one whose account or organisation was just flagged, text the
first stage does not clear) goes into the next batch ahead of every ordinary one, so an
attacker's score does not wait behind a benign bulk sender's backlog; one marked ``first`` (a
prompt served unscored) goes ahead of the urgent ones too, never of the inline scorer. Held
``max_defer_s``, an ordinary one joins the urgent line, twice that an urgent one the first line:
none is starved. A caller that stops waiting (a screening past its deadline) leaves a result
already being computed to the shared :class:`RecentScores`, not computed again by the stream.

One given up on before it was scored goes to the stream's scorer (``late_to``), where the
stream's item of that prompt joins it, moving it up to its own line (``_join``): dropped, it was
queued again at the back when the gate served it unscored (every screening, on a starved CPU).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections import deque
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from safeguards.adapters.classifier.errors import (
    InferenceFailed,
    ScorerClosed,
    ScorerOverloaded,
)
from safeguards.adapters.classifier.lane import InferenceLane
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.pending import (
    PendingScore,
    ScorerConfig,
    ScorerStats,
    age_held,
    next_queued,
)
from safeguards.adapters.classifier.recent import RecentScores, ScoreResult
from safeguards.adapters.classifier.text import PreparedText, prepare_text

__all__ = ["MicroBatchScorer", "RecentScores", "ScoreResult", "ScorerConfig", "ScorerStats"]

log = logging.getLogger(__name__)


_Batch = list[tuple[PendingScore, str]]


class MicroBatchScorer:
    """Micro-batching scorer for one model; an async context manager that owns its tasks."""

    def __init__(self, model: LoadedModel, config: ScorerConfig | None = None, *,
                 recent: RecentScores | None = None, lane: InferenceLane | None = None,
                 inline: bool = False) -> None:
        """``lane``: shared with the model's other scorer; ``inline`` says which side this is
        (inline holds the lane while it works, background yields to it)."""
        self.model = model
        self.config = config or ScorerConfig()
        self.recent = recent
        self.holds = lane if inline else None  # the lane this scorer holds while it works
        # who finishes what its callers gave up on (inline: the stream's scorer)
        self.late_to: MicroBatchScorer | None = None
        self._taken: dict[tuple[str, str], PendingScore] = {}  # handed to this one, by text
        self._joining: dict[tuple[str, str], int] = {}  # the line items waiting for one want
        self.yields_to = None if inline else lane  # the lane its batches wait their turn on
        self.stats = ScorerStats()
        self._tg: TaskGroup | None = None
        self._send: MemoryObjectSendStream[PendingScore] | None = None
        self._limiter = anyio.CapacityLimiter(self.config.workers)
        self._batches_in_flight = 0  # sent to the workers and not finished

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    async def __aenter__(self) -> Self:
        send, receive = anyio.create_memory_object_stream[PendingScore](self.config.queue_size)
        batch_send, batch_receive = anyio.create_memory_object_stream[_Batch](
            self.config.workers)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._send = send
        self._tg.start_soon(self._collect, receive, batch_send)
        for _ in range(self.config.workers):
            self._tg.start_soon(self._infer_loop, batch_receive.clone())
        batch_receive.close()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        if self._send is not None:
            self._send.close()  # the collector drains what is queued, then the workers stop
            self._send = None
        return await self._tg.__aexit__(et, exc, tb)

    def prepare(self, text: str | bytes) -> PreparedText:
        """Validate and window ``text``; raises TextRejected (counted) for unusable input."""
        m = self.model.manifest
        try:
            prepared = prepare_text(text, max_chars=m.max_chars, max_windows=m.max_windows,
                                    fine_chars=m.fine_chars, normalizer=m.window_normalizer)
        except Exception:
            self.stats.rejected += 1
            raise
        if prepared.truncated:
            self.stats.truncated += 1
        return prepared

    async def score(self, text: str | bytes | PreparedText, kind: str = "prompt", *,
                    urgent: bool = False, first: bool = False) -> ScoreResult:
        """Score one text as ``kind`` content ("prompt" or "completion"); ``urgent``: batched
        ahead of the requests that are not; ``first``: ahead of the urgent ones too. Raises
        TextRejected, ScorerOverloaded, ScorerClosed, InferenceFailed."""
        prepared = text if isinstance(text, PreparedText) else self.prepare(text)
        if self._send is None:
            raise ScorerClosed("scorer is not running")
        if self.recent is not None:
            known = self.recent.get(self.model, kind, prepared.sha256)
            if known is None and self.holds is None:  # a screening of it may be under way
                known = await self._join(kind, prepared.sha256, 0 if first else 1 if urgent else 2)
            if known is not None:
                self.stats.reused += 1
                return known
        pending = PendingScore(prepared, kind, remaining=len(prepared.windows),
                               line=0 if first else 1 if urgent else 2)
        self.stats.urgent += urgent or first
        self.stats.first += first
        if self.holds is None:
            return await self._score_pending(pending, prepared, kind)
        self.holds.hold()
        try:
            return await self._score_pending(pending, prepared, kind)
        finally:
            self.holds.release()

    async def _join(self, kind: str, sha256: str, line: int) -> ScoreResult | None:
        """A computation of the text under way, moved up to ``line``: its result, or None."""
        assert self.recent is not None and self._send is not None
        done = self.recent.running(self.model, kind, sha256)
        if done is None:
            return None
        key = (kind, sha256)
        taken = self._taken.pop(key, None)
        if taken is None:  # not handed over yet (its batch waits for the inline worker)
            self._joining[key] = min(line, self._joining.get(key, line))
        elif not taken.batched and line < taken.line:
            taken.line = line  # held again in this line; the copy left behind is skipped
            with contextlib.suppress(anyio.WouldBlock):
                self._send.send_nowait(taken)
        try:
            with anyio.move_on_after(self.config.max_defer_s * 10):  # a scorer gone: scored here
                await done.wait()
        finally:
            self._joining.pop(key, None)
        known = self.recent.get(self.model, kind, sha256)
        self.stats.joined += known is not None
        return known

    async def _score_pending(self, pending: PendingScore, prepared: PreparedText,
                             kind: str) -> ScoreResult:
        assert self._send is not None
        try:
            pending_sent = False
            try:
                self._send.send_nowait(pending)
                pending_sent = True
            except anyio.WouldBlock:
                with anyio.move_on_after(self.config.enqueue_timeout_s):
                    await self._send.send(pending)
                    pending_sent = True
            if not pending_sent:
                self.stats.overloaded += 1
                raise ScorerOverloaded(f"scoring queue full ({self.config.queue_size} waiting)")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ScorerClosed("scorer is shutting down") from None
        self.stats.requests += 1
        if self.late_to is not None and self.recent is not None:  # queued: it is finished
            self.recent.computing(self.model, kind, prepared.sha256, pending.done)
        try:
            await pending.done.wait()
        except BaseException:
            # A result already computed (the batch finished as the caller gave up) is kept for
            # the content stream's scoring; one not batched yet goes to ``late_to`` (else it
            # is skipped).
            pending.abandoned = True
            self._keep_late(pending)
            raise
        if pending.error is not None:
            raise pending.error
        return self._result(pending)

    def _result(self, pending: PendingScore) -> ScoreResult:
        """The result of a request all of whose windows were scored (kept in ``recent``)."""
        if pending.result is not None:
            return pending.result
        assert pending.best is not None
        prepared, kind = pending.prepared, pending.kind
        # Raw columns were maxed over windows; calibration is monotonic, so this is the
        # maximum calibrated score of each category.
        probs = self.model.calibrate(pending.best[None, :], kind)[0]
        labels = self.model.manifest.labels_for(kind)
        result = ScoreResult(
            model_name=self.model.name,
            model_version=self.model.version,
            scores=tuple((lab.category, round(float(probs[j]), 6))
                         for j, lab in enumerate(labels)),
            content_sha256=prepared.sha256,
            content_chars=prepared.chars,
            truncated=prepared.truncated,
            windows=len(prepared.windows),
        )
        if self.recent is not None:
            self.recent.put(self.model, kind, result)
        pending.result = result
        return result

    def _keep_late(self, pending: PendingScore) -> None:
        """An abandoned request whose windows have all been scored: its result is kept."""
        if (self.recent is not None and pending.done.is_set() and pending.error is None
                and pending.best is not None):
            self.stats.kept_late += 1
            self._result(pending)

    def _bucket(self, window: str) -> int:  # the first edge at least as long, else the last
        return bisect.bisect_left(self.config.bucket_edges, len(window))

    async def _collect(self, receive: MemoryObjectReceiveStream[PendingScore],
                       batches: MemoryObjectSendStream[_Batch]) -> None:
        cfg = self.config
        # What has been taken off the queue and not batched yet: first, urgent, the rest.
        held: tuple[deque[PendingScore], ...] = (deque(), deque(), deque())
        async with receive, batches:
            closed = False
            while True:
                if not any(held):
                    if closed:
                        break
                    try:
                        self._hold(held, await receive.receive())
                    except anyio.EndOfStream:
                        break
                # Wait for company only while inference is busy anyway: an idle scorer sends a
                # lone request at once (latency), a busy one lets requests pile up (throughput).
                wait = cfg.max_wait_s if self._batches_in_flight else 0.0
                deadline = anyio.current_time() + wait
                # Everything queued by now is taken (at most queue_size held), so an urgent
                # request queued behind ordinary ones still goes into the next batch.
                while not closed and sum(map(len, held)) < cfg.queue_size:
                    try:
                        nxt = await next_queued(receive, deadline - anyio.current_time())
                    except anyio.EndOfStream:
                        closed = True
                        break
                    if nxt is None:
                        break
                    self._hold(held, nxt)
                age_held(held, anyio.current_time(), cfg.max_defer_s)
                buckets: dict[int, _Batch] = {}
                n = 0
                for queue in held:
                    while queue and n < cfg.max_batch:
                        pending = queue.popleft()
                        if pending.batched:  # a copy left behind in a lower line (``_join``)
                            continue
                        if not pending.abandoned or pending.finish:
                            n += self._add(buckets, pending)
                        else:
                            self._hand_over(pending)
                for key in sorted(buckets):
                    batch = buckets[key]
                    for start in range(0, len(batch), cfg.max_batch):
                        self._batches_in_flight += 1
                        await batches.send(batch[start : start + cfg.max_batch])

    def _wanted(self, queued: _Batch) -> _Batch:
        """What of a batch is still wanted (one given up on is handed over, ``_hand_over``)."""
        out = []
        for pending, window in queued:
            if not pending.abandoned or pending.finish:
                out.append((pending, window))
            elif len(pending.prepared.windows) == 1:
                self._hand_over(pending)
            else:  # a stream item joining it scores it itself
                pending.fail(ScorerClosed("given up on"))
        return out

    def _hand_over(self, pending: PendingScore) -> None:
        """Given up on before any window was scored: to ``late_to`` (for ``_join``), or skipped."""
        target = self.late_to
        if target is None:
            return
        if target._send is None:
            pending.fail(ScorerClosed("nobody finishes it"))  # a joiner scores it itself
            return
        key = (pending.kind, pending.prepared.sha256)
        pending.finish, pending.batched = True, False  # none of it was scored here
        pending.line = min(pending.line, target._joining.pop(key, pending.line))
        try:
            target._send.send_nowait(pending)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pending.fail(ScorerOverloaded("the stream's queue is full"))
            return
        target._taken[key] = pending
        while len(target._taken) > target.config.queue_size:  # unclaimed: oldest forgotten
            del target._taken[next(iter(target._taken))]
        target.stats.requests += 1
        self.stats.handed_over += 1

    @staticmethod
    def _hold(held: tuple[deque[PendingScore], ...], pending: PendingScore) -> None:
        pending.held_since = anyio.current_time()
        held[pending.line].append(pending)

    def _add(self, buckets: dict[int, _Batch], pending: PendingScore) -> int:
        pending.batched = True
        for window in pending.prepared.windows:
            buckets.setdefault(self._bucket(window), []).append((pending, window))
        return len(pending.prepared.windows)

    async def _infer_loop(self, batches: MemoryObjectReceiveStream[_Batch]) -> None:
        async with batches:
            async for queued in batches:
                try:
                    await self._run_batch(queued)
                finally:
                    self._batches_in_flight -= 1

    async def _run_batch(self, queued: _Batch) -> None:
        batch = self._wanted(queued)
        if not batch:
            return
        if self.yields_to is not None:
            await self.yields_to.wait_turn(self.config.yield_limit_s)
            batch = self._wanted(batch)
            if not batch:
                return
        texts = [w for _, w in batch]
        prompts = [pending.kind == "prompt" for pending, _ in batch]  # only they read fragments
        started = time.perf_counter()
        try:
            raw = await anyio.to_thread.run_sync(
                self.model.raw, texts, prompts, limiter=self._limiter)
        except Exception as exc:  # ORT errors: fail this batch's callers, keep serving
            log.error("inference failed for a batch of %d: %s", len(texts),
                      type(exc).__name__)
            err = InferenceFailed(f"inference failed: {type(exc).__name__}")
            for pending, _ in batch:
                pending.fail(err)
            return
        self.stats.inference_s += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.windows += len(texts)
        for (pending, _), row in zip(batch, raw, strict=True):
            if pending.error is None:
                pending.deliver(row)
                if pending.abandoned:  # its caller gave up while this batch ran
                    self._keep_late(pending)
                elif self.late_to is not None and pending.done.is_set():
                    self._result(pending)  # in ``recent`` before a stream item joining it wakes

