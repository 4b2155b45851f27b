"""Typed errors of the classifier adapter. Messages name sizes, fields and reasons, never text."""

from __future__ import annotations

from typing import Literal

from safeguards.core.errors import InvalidInput, SafeguardsError


class ModelError(SafeguardsError):
    """A model or its manifest cannot be used."""


class ManifestError(ModelError, InvalidInput):
    """The manifest is not valid JSON or breaks the schema; the message lists every problem."""


class ModelLoadError(ModelError):
    """The model file is missing, altered (checksum), not ONNX, or does not match its manifest."""


RejectReason = Literal["empty_text", "not_utf8", "binary", "too_long", "not_text"]


class TextRejected(InvalidInput):
    """Content that will not be scored; ``reason`` is a short typed code safe to log and reply."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        self.reason: RejectReason = reason
        super().__init__(reason if not detail else f"{reason}: {detail}")


class ScorerOverloaded(SafeguardsError):
    """The scorer's bounded queue is full; the caller should shed or retry later."""

    retryable = True


class ScorerClosed(SafeguardsError):
    """The scorer is not running (not started yet or shutting down)."""

    retryable = True


class InferenceFailed(SafeguardsError):
    """ONNX Runtime raised while running a batch; the batch's requests all fail with this."""

    retryable = True


class StreamConflict(SafeguardsError):
    """An existing stream under our name has a configuration we cannot work with."""
