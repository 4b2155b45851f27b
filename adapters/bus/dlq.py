"""The dead-letter stream: poison messages with their reason, kept for operators to inspect.

The original bytes travel unchanged (they may be undecodable); the reason, the error class and
where the message came from travel in headers. Reasons never carry message content: they are a
fixed vocabulary plus the typed error's own content-free message. The original's proof headers
(the producer's MAC, an operator's name and signature: over subject and bytes, no content) are
kept as they were, so ``ops dlq replay`` can re-publish a parked signal exactly as it was sent
and the node checks it as it checked the original.
"""

from __future__ import annotations

import anyio
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError

from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.core.bus import DeadLetterReason, InboundMessage
from safeguards.core.subjects import dead_letter_subject, stream_name

__all__ = ["DeadLetterReason", "DeadLetters", "header_safe"]

PUBLISH_TIMEOUT_S = 5.0

H_REASON = "Sg-Dlq-Reason"
H_ERROR = "Sg-Dlq-Error"
H_DETAIL = "Sg-Dlq-Detail"
H_SUBJECT = "Sg-Dlq-Subject"
H_STREAM = "Sg-Dlq-Stream"
H_SEQUENCE = "Sg-Dlq-Sequence"
H_DELIVERIES = "Sg-Dlq-Deliveries"
# The original's proofs, kept under their own names (``bus.producer_auth.PRODUCER_HEADER``,
# ``adapters.operators.OPERATOR_HEADER`` and ``SIGNATURE_HEADER``).
KEPT_PROOFS = ("Sg-Producer", "Sg-Operator", "Sg-Operator-Signature")


def header_safe(text: str, limit: int = 200) -> str:
    cleaned = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    return cleaned[:limit]


class DeadLetters:
    """The bus port's DeadLetterSink on JetStream: poison messages of one region go to
    ``sg.<region>.dlq.<source>``."""

    def __init__(self, js: JetStreamContext, region: str) -> None:
        self._js = js
        self.region = region
        self._stream = stream_name(region, "DLQ")

    async def send(self, msg: InboundMessage, source: str, reason: DeadLetterReason | str,
                   error: BaseException | None = None, *, payload: bytes | None = None,
                   timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        """Dead-letter ``msg``; raises :class:`BusUnavailable` if JetStream did not confirm it,
        in which case the caller must not ack the original. ``payload`` replaces the original
        bytes where those must not be kept (content text: the classifier keeps a digest)."""
        headers = {
            H_REASON: str(reason),
            H_SUBJECT: header_safe(msg.subject),
            H_STREAM: msg.stream,
            H_SEQUENCE: str(msg.sequence),
            H_DELIVERIES: str(msg.deliveries),
            # Dead-lettering twice (a crash between this publish and the ack) stays one entry.
            "Nats-Msg-Id": f"dlq:{msg.stream}:{msg.sequence}",
        }
        for name in KEPT_PROOFS:
            value = msg.headers.get(name)
            if value and payload is None:  # a replaced payload's proof would prove nothing
                headers[name] = header_safe(value, 1000)
        if error is not None:
            headers[H_ERROR] = type(error).__name__
            headers[H_DETAIL] = header_safe(str(error))
        try:
            with anyio.fail_after(timeout_s):
                await self._js.publish(dead_letter_subject(self.region, source),
                                       msg.data if payload is None else payload,
                                       timeout=timeout_s, stream=self._stream, headers=headers)
        except (TimeoutError, nats.errors.Error, APIError) as exc:
            raise BusUnavailable(f"dead-letter publish failed: {type(exc).__name__}") from None
