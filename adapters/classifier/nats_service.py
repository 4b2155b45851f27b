"""The classifier on NATS for one region: content-stream consumer and ``classify`` responder.

*Consumer.* A durable pull consumer on the region's CONTENT stream (work queue, minutes of
retention), fetched as soon as items are there, some first (``intake``: one served unscored, a
fresh or flagged account's). Each item is scored by the primary model and every shadow model; each
result is a :class:`Signal` whose observation is a :class:`ScoreRecorded` (hash, length, scores,
model name and version; never text), published to the account's input subject with ``Nats-Msg-Id``
= the signal id. The id derives from (request, kind, model, version), so a redelivery publishes the
same id and the actor's inbox (and JetStream's duplicate window) make it idempotent. The content
message is acked only after every publish is confirmed. Retryable failures are nak'ed with a delay;
after ``max_attempts`` deliveries, or at once for poison (undecodable, wrong region, unusable
text), the message goes to ``sg.<region>.dlq.classifier`` with its reason in headers. The dead
letter carries metadata only (stream, sequence, size, sha256): raw text stays put.

*Responder.* ``sg.<region>.classify`` request/reply for the inline gate, queue group
``classifier``. The reply comes within the request's ``deadline_ms`` (measured from receipt), or
says ``error="deadline"``; other typed errors: ``malformed``, ``wrong_region``, ``overloaded``,
``unavailable``, ``inference_failed`` and the input reasons (``empty_text``, ``binary``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import anyio
import msgpack
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from safeguards.adapters import tracing
from safeguards.adapters.bus.dlq import DeadLetters, header_safe
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.inbound import JetStreamMessage
from safeguards.adapters.bus.producer_auth import ProducerKeys, Unsealable
from safeguards.adapters.bus.streams import content_config, dlq_config, ensure_stream
from safeguards.adapters.classifier.errors import (
    InferenceFailed,
    ScorerClosed,
    ScorerOverloaded,
    TextRejected,
)
from safeguards.adapters.classifier.intake import ContentTriage, fetch_promptly
from safeguards.adapters.classifier.nats_service_settings import ClassifierSettings, ServiceStats
from safeguards.adapters.classifier.scorer import MicroBatchScorer, ScoreResult
from safeguards.adapters.classifier.text import PreparedText
from safeguards.core.codec import decode_record, encode_record, encode_signal
from safeguards.core.content import ClassifyReply, ClassifyRequest, ContentItem
from safeguards.core.errors import CodecError, InvalidAccountId, InvalidInput, SafeguardsError
from safeguards.core.events import ScoreRecorded, Signal
from safeguards.core.ids import aggregate_kind, derive_id, validate_region
from safeguards.core.prompt_links import content_digest
from safeguards.core.subjects import classify_subject, content_subject, inputs_subject, stream_name

log = logging.getLogger(__name__)

DLQ_SOURCE = "classifier"
__all__ = ["ClassifierService", "ClassifierSettings", "ServiceStats"]


class _Retry(Exception):
    """Internal: this delivery failed in a way a later delivery may not."""

    def __init__(self, reason: str, error: BaseException) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


class ClassifierService:
    """Runs the consumer and the responder of one region until cancelled."""

    def __init__(self, nc: Client, region: str, primary: MicroBatchScorer,
                 settings: ClassifierSettings, shadows: Sequence[MicroBatchScorer] = (),
                 inline: MicroBatchScorer | None = None, producer: ProducerKeys | None = None,
                 forwarders: dict[str, ProducerKeys] | None = None,
                 link_key: bytes | None = None, home_link_keys: dict[str, bytes] | None = None,
                 triage: ContentTriage | None = None) -> None:
        """``inline`` answers the gates' synchronous requests (same model, its own queue and
        inference thread), so a screening never waits behind background content scoring.
        ``producer``: the region's producer keys; content must carry a gate's MAC and score
        signals go out with ours (None: neither, for tests that publish raw content);
        ``forwarders``: the key per home region of accounts homed elsewhere (``core.homes``),
        ``home_link_keys`` their link keys where given (a score sent home has the home's digest)."""
        self.producer, self.forwarders = producer, forwarders or {}
        self.nc, self.triage = nc, triage  # triage: which content goes first (None: in order)
        self.link_key = link_key  # content_sha256 is content_digest under it (None: plain)
        self.home_link_keys = home_link_keys or {}
        self.js: JetStreamContext = nc.jetstream(timeout=settings.publish_timeout_s)
        self.region = validate_region(region)
        self.primary = primary
        self.inline = inline or primary
        self.shadows = tuple(shadows)
        self.settings = settings
        self.stats = ServiceStats()
        self._content_stream = stream_name(region, "CONTENT")

    # --- lifecycle ---------------------------------------------------------------------------

    async def provision(self) -> None:
        """The CONTENT and DLQ streams, created if absent; existing ones are adopted as they are
        (the bus adapter provisions the same streams with the same names and subjects)."""
        await ensure_stream(self.js, content_config(self.region, self.settings.streams),
                            adopt_existing=True)
        await ensure_stream(self.js, dlq_config(self.region, self.settings.streams),
                            adopt_existing=True)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.provision()
        s = self.settings
        with anyio.fail_after(s.publish_timeout_s):
            psub = await self.js.pull_subscribe(
                f"sg.{self.region}.content.>", durable=s.durable, stream=self._content_stream,
                config=api.ConsumerConfig(ack_wait=s.ack_wait_s, max_deliver=-1,
                                          max_ack_pending=s.in_flight * 2),
            )
            rsub = await self.nc.subscribe(classify_subject(self.region), queue="classifier")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._consume, psub, tg)
                tg.start_soon(self._respond, rsub, tg)
                log.info("classifier serving region %s with %s %s (+%d shadow) on %s",
                         self.region, self.primary.name, self.primary.version,
                         len(self.shadows), self.primary.model.provider)
                task_status.started()
        finally:
            with anyio.move_on_after(2.0, shield=True):
                for sub in (rsub, psub):
                    with contextlib.suppress(nats.errors.Error, APIError):
                        await sub.unsubscribe()

    # --- content stream -------------------------------------------------------------------

    async def _consume(self, psub: Any, tg: TaskGroup) -> None:
        limiter = anyio.Semaphore(self.settings.in_flight)
        while True:
            try:
                msgs = await fetch_promptly(psub, self.settings)
            except TimeoutError:  # nats' own, or asyncio's from deep inside fetch: no messages
                continue
            except nats.errors.Error as exc:  # connection trouble: back off, nats-py reconnects
                log.warning("content fetch failed: %s", type(exc).__name__)
                await anyio.sleep(self.settings.retry_delay_s)
                continue
            for msg in msgs:
                await limiter.acquire()  # backpressure: stop fetching while saturated
                tg.start_soon(self._handle_content_guarded, msg, limiter)

    async def _handle_content_guarded(self, msg: Msg, limiter: anyio.Semaphore) -> None:
        try:
            await self._handle_content(msg)
        finally:
            limiter.release()

    async def _handle_content(self, msg: Msg) -> None:
        data = msg.data
        if self.producer is not None:
            why = self.producer.problem(msg.subject, data, dict(msg.headers or {}))
            if why is None:
                try:
                    data = self.producer.open(msg.subject, data)  # sealed by the gate
                except Unsealable as exc:
                    why = f"content_unsealable: {exc}"
            if why is not None:
                await self._dead_letter(msg, why, None)  # planted in someone's name: an alarm
                return
        try:
            item = decode_record(data, ContentItem)
        except CodecError as exc:
            await self._dead_letter(msg, "undecodable", exc)
            return
        if item.region != self.region:
            await self._dead_letter(msg, "region_mismatch", None)
            return
        try:
            if msg.subject != content_subject(self.region, item.account_id):
                await self._dead_letter(msg, "subject_mismatch", None)
                return
            if aggregate_kind(item.account_id) is not None:
                raise InvalidAccountId("content cannot be an aggregate's own")
            if item.home_region and not (item.home_region in self.forwarders
                                         and 1 <= item.home_partitions <= 4096):
                raise InvalidInput("content names a home this region does not forward to")
            aggregates = item.aggregates()
            prepared = self.primary.prepare(item.text)
        except TextRejected as exc:
            await self._dead_letter(msg, f"text_{exc.reason}", exc)
            return
        except SafeguardsError as exc:  # InvalidAccountId and friends
            await self._dead_letter(msg, "invalid_item", exc)
            return
        try:
            with tracing.consuming("safeguards.classifier.score", msg.headers):
                for result, shadow in await self._score_all(prepared, item, aggregates):
                    await self._publish(item, aggregates, result, shadow)
            await self._ack(msg)
        except _Retry as retry:
            await self._retry_or_dead_letter(msg, retry)

    async def _score_all(self, prepared: PreparedText, item: ContentItem,
                         aggregates: tuple[str, ...]) -> list[tuple[ScoreResult, bool]]:
        text, kind, triage, score = item.text, item.kind, self.triage, self.primary.score
        out: list[tuple[ScoreResult, bool]] = []
        try:  # a prompt served unscored first, then urgent items (``intake``), then the rest
            urgent, first = (False, False) if triage is None else triage.marks(item, aggregates)
            out.append((await score(prepared, kind, urgent=urgent, first=first), False))
        except (ScorerOverloaded, ScorerClosed, InferenceFailed) as exc:
            raise _Retry("scoring_failed", exc) from None
        self.stats.scored += 1
        if triage is not None:  # a score the policy counts: the account's next items go first
            triage.observe(item, aggregates, out[0][0].scores)
        if out[0][0].truncated:  # beyond max_windows (content_chars still says how long)
            log.info("content of %d chars truncated for scoring", prepared.chars)
        if self.shadows:
            shadow_results: list[ScoreResult | None] = [None] * len(self.shadows)

            async def one(i: int, scorer: MicroBatchScorer) -> None:
                try:
                    # each model windows the text by its own manifest
                    shadow_results[i] = await scorer.score(text, kind)
                except SafeguardsError as exc:  # a shadow never holds up the primary path
                    self.stats.shadow_failures += 1
                    log.warning("shadow model %s failed: %s", scorer.name, type(exc).__name__)

            async with anyio.create_task_group() as tg:
                for i, scorer in enumerate(self.shadows):
                    tg.start_soon(one, i, scorer)
            out += [(r, True) for r in shadow_results if r is not None]
        return out

    def signals_for(self, item: ContentItem, result: ScoreResult, shadow: bool,
                    aggregates: tuple[str, ...] = ()) -> list[Signal]:
        """The score for the account's actor and the same score for each aggregate's the request
        named (organisation, API key): their strikes add up across all their accounts."""
        return [self._signal(item, result, shadow, item.account_id, None),
                *(self._signal(item, result, shadow, a, item.account_id) for a in aggregates)]

    def _signal(self, item: ContentItem, result: ScoreResult, shadow: bool, entity: str,
                member: str | None) -> Signal:
        signal_id = derive_id("score", item.request_id, item.kind, result.model_name,
                              result.model_version, *(() if member is None else (entity,)))
        key = self.link_key and self.home_link_keys.get(item.home_region or "", self.link_key)
        return Signal(
            signal_id=signal_id,
            account_id=entity,
            region=item.home_region or item.region,  # scores go to the account's home
            occurred_at=item.occurred_at,  # the content's time, so redelivery is identical
            correlation_id=item.correlation_id,
            observation=ScoreRecorded(
                request_id=item.request_id,
                content_kind=item.kind,
                content_sha256=content_digest(key, item.text),
                content_chars=result.content_chars,
                model_name=result.model_name,
                model_version=result.model_version,
                scores=result.scores, shadow=shadow, member_account=member,
                # the prompt's link key, on the account's own score only: core.decide links it
                prompt_link=item.prompt_link if member is None else None,
            ),
        )

    async def _publish(self, item: ContentItem, aggregates: tuple[str, ...], result: ScoreResult,
                       shadow: bool) -> None:
        home = item.home_region
        signer = self.producer if home is None else self.forwarders[home]
        for signal in self.signals_for(item, result, shadow, aggregates):
            subject = inputs_subject(home or self.region, item.home_partitions if home
                                     else self.settings.partitions, signal.account_id)
            try:
                with anyio.fail_after(self.settings.publish_timeout_s):
                    data = encode_signal(signal)
                    signed = signer.headers(subject, data) if signer else {}
                    await self.js.publish(subject, data, timeout=self.settings.publish_timeout_s,
                                          headers=tracing.with_current(
                                              {"Nats-Msg-Id": signal.signal_id, **signed}))
            except (TimeoutError, nats.errors.Error, APIError) as exc:
                raise _Retry("publish_failed", exc) from None
            self.stats.published += 1

    async def _ack(self, msg: Msg) -> None:
        # A plain ack, not ack_sync: the signals it guards are confirmed; a lost ack is only a
        # redelivery of the same signal ids (deduplicated). Waiting for it halved throughput.
        try:
            with anyio.fail_after(self.settings.publish_timeout_s):
                await msg.ack()
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("content ack not sent: %s", type(exc).__name__)

    async def _retry_or_dead_letter(self, msg: Msg, retry: _Retry) -> None:
        delivered = msg.metadata.num_delivered
        if delivered >= self.settings.max_attempts:
            await self._dead_letter(msg, retry.reason, retry.error)
            return
        self.stats.retried += 1
        log.info("content delivery %d failed (%s); retrying", delivered, retry.reason)
        # A lost NAK costs only time: the ack_wait expiry redelivers the message anyway.
        with contextlib.suppress(TimeoutError, nats.errors.Error), \
                anyio.fail_after(self.settings.publish_timeout_s):
            await msg.nak(delay=self.settings.retry_delay_s * delivered)

    async def _dead_letter(self, msg: Msg, reason: str, error: BaseException | None) -> None:
        meta = msg.metadata
        payload = msgpack.packb({
            "stream": meta.stream, "sequence": meta.sequence.stream,
            "subject": header_safe(msg.subject), "bytes": len(msg.data),
            "sha256": hashlib.sha256(msg.data).hexdigest()})
        try:
            await DeadLetters(self.js, self.region).send(
                JetStreamMessage(msg), DLQ_SOURCE, reason, error, payload=payload,
                timeout_s=self.settings.publish_timeout_s)
        except BusUnavailable as exc:
            # not confirmed: leave the content message unacked so it comes back
            log.warning("dead letter not confirmed (%s): %s", reason, exc)
            return
        self.stats.dead_lettered += 1
        log.info("content message dead-lettered: %s", reason)
        await self._ack(msg)

    # --- classify request/reply ----------------------------------------------------------------

    async def _respond(self, rsub: Any, tg: TaskGroup) -> None:
        limiter = anyio.Semaphore(self.settings.responder_in_flight)
        async for msg in rsub.messages:
            received = anyio.current_time()
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                tg.start_soon(self._reply_error, msg, "", "overloaded")
                continue
            tg.start_soon(self._handle_classify_guarded, msg, received, limiter)

    async def _handle_classify_guarded(self, msg: Msg, received: float,
                                       limiter: anyio.Semaphore) -> None:
        try:
            await self._handle_classify(msg, received)
        finally:
            limiter.release()

    async def _handle_classify(self, msg: Msg, received: float) -> None:
        try:
            data = msg.data if self.producer is None else self.producer.open(msg.subject,
                                                                             msg.data)
            req = decode_record(data, ClassifyRequest)
        except (CodecError, Unsealable):
            await self._reply_error(msg, "", "malformed")
            return
        if req.region != self.region:
            await self._reply_error(msg, req.request_id, "wrong_region")
            return
        budget = req.deadline_ms / 1000.0 - (anyio.current_time() - received)
        budget -= self.settings.reply_margin_s
        if not budget > 0:
            await self._reply_error(msg, req.request_id, "deadline")
            return
        error: str | None = None
        result: ScoreResult | None = None
        with anyio.move_on_after(budget) as scope:
            try:
                result = await self.inline.score(req.text, req.kind, first=req.first)
            except TextRejected as exc:
                error = exc.reason
            except ScorerOverloaded:
                error = "overloaded"
            except ScorerClosed:
                error = "unavailable"
            except InferenceFailed:
                error = "inference_failed"
        if scope.cancelled_caught:
            error = "deadline"
        if result is None or error is not None:
            await self._reply_error(msg, req.request_id, error or "deadline")
            return
        await self._reply(msg, ClassifyReply(req.request_id, result.model_name,
                                             result.model_version, result.scores))

    async def _reply_error(self, msg: Msg, request_id: str, error: str) -> None:
        self.stats.classify_errors[error] = self.stats.classify_errors.get(error, 0) + 1
        await self._reply(msg, ClassifyReply(request_id, self.primary.name,
                                             self.primary.version, (), error=error))

    async def _reply(self, msg: Msg, reply: ClassifyReply) -> None:
        if not msg.reply:
            return  # a publish without a reply subject: nobody is waiting
        data = encode_record(reply)
        if self.producer is not None:  # sealed for the asking gate's inbox
            data = self.producer.seal(msg.reply, data)
        try:
            with anyio.fail_after(self.settings.publish_timeout_s):
                await msg.respond(data)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("classify reply not sent: %s", type(exc).__name__)
            return
        if reply.error is None:
            self.stats.classify_replies += 1
