"""Messages that carry raw text: content for scoring and synchronous classification.

These are the only records in the system that hold prompt or completion text. They travel on
the region's short-TTL content stream and the classify request/reply subject, and are never
stored in the event store, logged, or echoed in errors (their ``repr`` hides the text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from safeguards.core.events import ContentKind, Scores

CLIP_MARK = "\n[...]\n"


def clip_middle(text: str, limit: int) -> tuple[str, bool]:
    """``text`` if it fits in ``limit`` characters, else its head and its tail (half each) with
    a mark between, and True. Padding a prompt with benign text never pushes its end out of
    what is scored; the caller treats a clipped text as risk (the middle went unscored)."""
    if len(text) <= limit:
        return text, False
    half = max(0, (limit - len(CLIP_MARK)) // 2)
    return text[:half] + CLIP_MARK + text[len(text) - half:], True


@dataclass(frozen=True, slots=True)
class ContentItem:
    """One prompt or completion to score asynchronously; scores go to the account's actor and,
    when the request named an organisation, to the organisation's."""

    request_id: str
    account_id: str
    region: str
    kind: ContentKind
    text: str = field(repr=False)
    occurred_at: datetime
    correlation_id: str
    organization_id: str | None = None


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
