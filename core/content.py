"""Messages that carry raw text: content for scoring and synchronous classification.

These are the only records in the system that hold prompt or completion text. They travel on
the region's short-TTL content stream and the classify request/reply subject, and are never
stored in the event store, logged, or echoed in errors (their ``repr`` hides the text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from safeguards.core.events import ContentKind, Scores
from safeguards.core.ids import api_key_entity, organization_entity, prompt_entity

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
    """One prompt or completion to score asynchronously; scores go to the account's actor and to
    those of the aggregates the request named (its organisation, its API key's fingerprint)."""

    request_id: str
    account_id: str
    region: str
    kind: ContentKind
    text: str = field(repr=False)
    occurred_at: datetime
    correlation_id: str
    organization_id: str | None = None
    api_key_fingerprint: str | None = None
    # the account's home where it is another region (``core.homes``): the text stays here, its
    # scores go to the home's input subjects (its partition count ``home_partitions``)
    home_region: str | None = None
    home_partitions: int = 0
    # a prompt its gate served without a score (the inline screening or classification missed
    # its deadline or failed open): the content stream scores it ahead of other content
    # (``classifier.intake``), bounded per account and never ahead of inline screenings
    served_unscored: bool = False
    # a prompt's link key as its gate computed it (``core.prompt_links``: a keyed hash, never
    # text): its score carries it to the account, which may see the score before the request
    # (a batch's prompts are scored at its creation, its requests observed with its results)
    prompt_link: str | None = None

    def aggregates(self) -> tuple[str, ...]:
        """The entity ids of the aggregates it names; InvalidAccountId for a malformed one, or
        for a malformed prompt link key (the prompt's, which only the account's decision links)."""
        if self.prompt_link is not None:
            prompt_entity(self.prompt_link)
        out = []
        if self.organization_id is not None:
            out.append(organization_entity(self.organization_id))
        if self.api_key_fingerprint is not None:
            out.append(api_key_entity(self.api_key_fingerprint))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ClassifyRequest:
    """Synchronous scoring for the inline gate; the reply must arrive within ``deadline_ms``.
    ``first``: a fresh account's probation screening (its first asks are scored rather than
    served for want of a score) or a flagged account's check (L1 and up): the classifier
    batches it ahead of its other inline work, ordinary screenings."""

    request_id: str
    region: str
    kind: ContentKind
    text: str = field(repr=False)
    deadline_ms: float
    first: bool = False


@dataclass(frozen=True, slots=True)
class ClassifyReply:
    request_id: str
    model_name: str
    model_version: str
    scores: Scores
    error: str | None = None  # a typed reason (e.g. "empty_text", "overloaded"), never content
