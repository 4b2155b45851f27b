"""Messages that carry raw text: content for scoring and synchronous classification.

These are the only records in the system that hold prompt or completion text. They travel on
the region's short-TTL content stream and the classify request/reply subject, and are never
stored in the event store, logged, or echoed in errors (their ``repr`` hides the text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from safeguards.core.events import ContentKind, Scores


@dataclass(frozen=True, slots=True)
class ContentItem:
    """One prompt or completion to score asynchronously; scores go to the account's actor."""

    request_id: str
    account_id: str
    region: str
    kind: ContentKind
    text: str = field(repr=False)
    occurred_at: datetime
    correlation_id: str


@dataclass(frozen=True, slots=True)
class ClassifyRequest:
    """Synchronous scoring for the inline gate; the reply must arrive within ``deadline_ms``."""

    request_id: str
    region: str
    kind: ContentKind
    text: str = field(repr=False)
    deadline_ms: float


@dataclass(frozen=True, slots=True)
class ClassifyReply:
    request_id: str
    model_name: str
    model_version: str
    scores: Scores
    error: str | None = None  # a typed reason (e.g. "empty_text", "overloaded"), never content
