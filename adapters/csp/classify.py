"""Synchronous classification for the inline path: request/reply over ``sg.<region>.classify``.

One NATS request per call, bounded by the policy's deadline. The answer is the scores, or None
with the reason it is missing (``classifier_timeout``, ``classifier_unavailable``,
``classifier_error``), which the gate turns into a counted fail-open or fail-closed decision;
``classifier_forged`` (an answer not sealed by the region's classifier) always fails closed.
"""

from __future__ import annotations

import math

import anyio
import nats

from safeguards.adapters.bus.producer_auth import ProducerKeys, Unsealable
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import CLASSIFIER_FORGED
from safeguards.core.codec import decode_record, encode_record
from safeguards.core.content import ClassifyReply, ClassifyRequest
from safeguards.core.errors import CodecError
from safeguards.core.events import ContentKind, Scores
from safeguards.core.subjects import classify_subject

# Longer text is not scored inline (it could not be in time) and never cut short silently:
# it is reported as ``classifier_too_long``, which the gate treats like a missing score (its
# fail-closed categories refuse); the content stream still scores its head and tail.
MAX_CLASSIFY_CHARS = 200_000
_REPLY_FAILURES = {"deadline": "classifier_timeout", "overloaded": "classifier_unavailable",
                   "unavailable": "classifier_unavailable"}


class SyncClassifier:
    def __init__(self, link: BusLink | None, region: str, deadline_ms: float,
                 producer: ProducerKeys | None = None) -> None:
        """``producer``: the region's producer keys; the request (the prompt) goes out sealed
        and only a reply sealed under them counts (None: plain, for tests)."""
        self.link = link
        self.producer = producer
        self.region = region
        self.subject = classify_subject(region)
        self.deadline_ms = deadline_ms
        self.calls = 0
        self.replied_at = -math.inf  # when the classifier last answered (scores or its error)

    def replied_within(self, seconds: float) -> bool:
        """Whether the classifier answered a request in the last ``seconds``: it is up, and a
        request of ours it did not answer in time found it busy, not gone."""
        return anyio.current_time() - self.replied_at <= seconds

    async def classify(self, request_id: str, kind: ContentKind, text: str, *,
                       deadline_ms: float | None = None,
                       first: bool = False) -> tuple[Scores | None, str]:
        """Scores, or None and why; ``deadline_ms`` overrides the policy's (screening);
        ``first`` asks the classifier to score it ahead of its other inline work (probation)."""
        self.calls += 1
        deadline_ms = self.deadline_ms if deadline_ms is None else deadline_ms
        if len(text) > MAX_CLASSIFY_CHARS:
            return None, "classifier_too_long"
        nc = self.link.nc if self.link is not None else None
        if nc is None or not nc.is_connected:
            return None, "classifier_unavailable"
        request = ClassifyRequest(request_id=request_id, region=self.region, kind=kind,
                                  text=text, deadline_ms=deadline_ms, first=first)
        deadline_s = deadline_ms / 1000
        payload = encode_record(request)
        if self.producer is not None:
            payload = self.producer.seal(self.subject, payload)
        try:
            with anyio.fail_after(deadline_s + 0.05):
                reply = await nc.request(self.subject, payload, timeout=deadline_s)
        except nats.errors.NoRespondersError:
            return None, "classifier_unavailable"
        except (TimeoutError, nats.errors.TimeoutError):
            return None, "classifier_timeout"
        except (OSError, nats.errors.Error):
            return None, "classifier_unavailable"
        try:
            data = reply.data if self.producer is None else self.producer.open(reply.subject,
                                                                               reply.data)
            answer = decode_record(data, ClassifyReply)
        except Unsealable:  # not our classifier's answer: someone on the bus (fails closed)
            return None, CLASSIFIER_FORGED
        except CodecError:
            return None, "classifier_error"
        if answer.request_id != request_id:
            return None, CLASSIFIER_FORGED if self.producer is not None else "classifier_error"
        self.replied_at = anyio.current_time()
        if answer.error is not None:
            # The classifier's own verdicts on why it has no scores: it ran out of our deadline,
            # or it is shedding load / shutting down; anything else is an error.
            return None, _REPLY_FAILURES.get(answer.error, "classifier_error")
        return answer.scores, ""
