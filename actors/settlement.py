"""How a partition settles its messages outside a commit: poison dead-lettered alone with its
reason on arrival, rejected signals retried a bounded number of times then dead-lettered, held
ones kept alive, and every ack, nak and terminate bounded by a deadline (a lost one only costs a
redelivery the inbox deduplicates)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import anyio

from safeguards.actors.actor import Envelope
from safeguards.actors.commit import ACK_TIMEOUT_S, StoreRefused
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.settings import NodeSettings
from safeguards.core.bus import (
    BusUnavailable,
    DeadLetterReason,
    DeadLetterSink,
    InboundMessage,
    SignalSource,
)
from safeguards.core.codec import decode_signal
from safeguards.core.errors import (
    CodecError,
    ConcurrencyConflict,
    InvalidInput,
    SafeguardsError,
)
from safeguards.core.events import Signal
from safeguards.core.operators import InputChecks

log = logging.getLogger(__name__)


class MailSettlement:
    def __init__(self, partition: int, dead_letters: DeadLetterSink, settings: NodeSettings,
                 metrics: NodeMetrics, checks: InputChecks) -> None:
        self.partition = partition
        self.checks = checks
        self.dead_letters = dead_letters
        self.settings = settings
        self.metrics = metrics
        self.source = f"acct-p{partition}"

    async def reject(self, env: Envelope, exc: Exception) -> None:
        """A signal whose decision failed. A domain error (a signal the account's history
        refuses) is a rejected input; anything else is a bug in deciding: loud, with its
        traceback, and dead-lettered under its own reason so it is never mistaken for bad input.
        Either way only this signal waits."""
        bug = not isinstance(exc, SafeguardsError)
        if bug:
            self.metrics.decide_errors += 1
            log.error("partition %d: deciding failed with a coding error (delivery %d)",
                      self.partition, env.deliveries, exc_info=exc)
        if env.deliveries >= self.settings.reject_after_deliveries:
            await self.dead_letter(env.msg, DeadLetterReason.DECIDE_FAILED if bug
                                   else DeadLetterReason.REJECTED, exc)
        else:
            log.warning("partition %d: decision failed (%s), delivery %d; retrying later",
                        self.partition, type(exc).__name__, env.deliveries)
            self.metrics.redelivery_requested += 1
            await self.settle(env.msg, "nak", delay=1.0)

    async def admit(self, msg: InboundMessage, region: str,
                    subject_of: Callable[[str], str]) -> Signal | None:
        """The signal a fetched message carries, or None for poison (not a signal we can read,
        another region's, on another account's subject, an operator action no registered
        operator with that role signed, or a signal none of the region's parts produced),
        dead-lettered alone with why."""
        try:
            signal = decode_signal(msg.data)
        except CodecError as exc:
            await self.dead_letter(msg, DeadLetterReason.UNDECODABLE, exc)
            return None
        if signal.region != region:
            await self.dead_letter(msg, DeadLetterReason.REGION_MISMATCH, None)
            return None
        if msg.subject != subject_of(signal.account_id):
            await self.dead_letter(msg, DeadLetterReason.SUBJECT_MISMATCH, None)
            return None
        refused = self.checks.problem(msg.subject, msg.data, msg.headers, signal)
        if refused is not None:
            reason, detail = refused
            log.error("partition %d: ALARM signal refused (%s: %s)", self.partition, reason,
                      detail)
            await self.dead_letter(msg, DeadLetterReason(reason), InvalidInput(detail))
            return None
        return signal

    async def keep_alive(self, mail: Sequence[Envelope], consumer: SignalSource,
                         now: float, older_than_s: float) -> None:
        """Tell JetStream that signals held longer than ``older_than_s`` (a hot account's
        backlog, a store outage, a full mailbox) are still ours, so none is redelivered to
        someone else meanwhile; the consumer does the same for what it buffers."""
        with contextlib.suppress(TimeoutError, BusUnavailable), anyio.fail_after(ACK_TIMEOUT_S):
            for env in mail:
                if now - env.since > older_than_s:
                    await env.msg.in_progress()
                    env.since = now
            await consumer.keep_alive()

    async def settle_round(self, rejected: Sequence[tuple[object, Envelope, Exception]],
                           set_aside: Sequence[tuple[Envelope, ConcurrencyConflict | StoreRefused]],
                           retry_later: Sequence[Envelope]) -> None:
        """After a commit cycle: signals whose decision failed, signals set aside (another
        writer kept winning their account on their last delivery, or the store refused their
        append as malformed), and those to retry after a pause."""
        for _, env, exc in rejected:
            await self.reject(env, exc)
        for env, why in set_aside:
            if isinstance(why, StoreRefused):
                await self.dead_letter(env.msg, DeadLetterReason.STORE_REFUSED, why.error)
            else:
                await self.dead_letter(env.msg, DeadLetterReason.REJECTED, why)
        for env in retry_later:
            self.metrics.redelivery_requested += 1
            await self.settle(env.msg, "nak", delay=1.0)

    async def release(self, mail: Sequence[Envelope]) -> None:
        """On the way out, hand back what is held so the next owner gets it without waiting for
        the ack timeout; whatever committed is deduplicated by the inbox on redelivery."""
        with anyio.move_on_after(ACK_TIMEOUT_S):
            for env in mail:
                await self.settle(env.msg, "nak")
                self.metrics.redelivery_requested += 1

    async def dead_letter(self, msg: InboundMessage, reason: DeadLetterReason,
                          error: BaseException | None) -> None:
        try:
            await self.dead_letters.send(msg, self.source, reason, error)
        except BusUnavailable:
            # Not confirmed: leave it unacked, so it comes back and is dead-lettered then.
            self.metrics.bus_failures += 1
            return
        self.metrics.dead_lettered += 1
        await self.settle(msg, "term")

    async def settle(self, msg: InboundMessage, how: str, delay: float | None = None) -> None:
        """Ack, nak or terminate. A lost ack only means a redelivery the inbox deduplicates."""
        try:
            with anyio.fail_after(ACK_TIMEOUT_S):
                if how == "ack":
                    await msg.ack()
                elif how == "nak":
                    await msg.nak(delay=delay)
                else:
                    await msg.term()
        except (TimeoutError, BusUnavailable):
            self.metrics.bus_failures += 1
