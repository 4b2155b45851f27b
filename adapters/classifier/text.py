"""Input checks before scoring: empty, non-UTF-8, binary and huge content get a typed outcome.

Long text is cut into half-overlapping windows of the model's ``max_chars``, and, where the
manifest names ``fine_chars``, into finer windows too (each window is scored and a category's
score is its maximum over windows), so harmful content is harder to hide behind benign
padding; past what ``max_windows`` windows cover, the head and the tail are scored and the
middle is not, which is recorded as ``truncated`` (risk, for the caller). The hash and length
always describe the whole original text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from safeguards.adapters.classifier.errors import TextRejected
from safeguards.adapters.classifier.normalize import normalize
from safeguards.core.content import clip_middle

BINARY_CONTROL_FRACTION = 0.10  # share of control characters above which content is binary
# C0 and C1 control characters (Unicode category Cc) other than tab, newline and carriage
# return; str.translate deletes them in C, far faster than a per-character category lookup.
# (Lone surrogates, the other binary marker, are already refused as not UTF-8.)
_CONTROL_CHARS = {c: None for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c not in (9, 10, 13)}


@dataclass(frozen=True, slots=True)
class PreparedText:
    windows: tuple[str, ...] = field(repr=False)
    sha256: str
    chars: int  # length of the original text, in code points
    truncated: bool  # windows beyond max_windows were not scored


def prepare_text(raw: str | bytes, *, max_chars: int, max_windows: int,
                 fine_chars: int = 0, normalizer: str | None = None) -> PreparedText:
    """Check and window one piece of content, or raise :class:`TextRejected` with a reason.

    ``normalizer`` (the manifest's) undoes obfuscation before windowing; the hash and length
    describe the original text."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise TextRejected("not_utf8", f"{len(raw)} bytes") from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise TextRejected("not_text", type(raw).__name__)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not representable as UTF-8
        raise TextRejected("not_utf8", "lone surrogate code points") from None
    if not text.strip():
        raise TextRejected("empty_text")
    sample = text[:65536]
    controls = len(sample) - len(sample.translate(_CONTROL_CHARS))
    if controls > BINARY_CONTROL_FRACTION * len(sample):
        raise TextRejected("binary", f"{controls} control characters in {len(sample)}")
    chars = len(text)
    if normalizer is not None:
        text = normalize(text, normalizer)
        if not text:  # only invisible characters
            raise TextRejected("empty_text", "nothing left after normalisation")
    # What the windows can cover; beyond it the head and the tail are scored (padding never
    # pushes a prompt's end out of view) and ``truncated`` says the middle was not.
    text, truncated = clip_middle(text, covered_chars(max_chars, max_windows))
    windows, _ = split_windows(text, max_chars, max_windows)
    if fine_chars and len(text) > fine_chars:
        # A short harmful passage inside a long benign text is diluted in a big window; the
        # fine windows see it with little company. Both scales are scored, the maximum kept.
        budget = max_windows * max_chars // fine_chars
        fine, fine_truncated = split_windows(text, fine_chars, budget)
        windows += fine
        truncated = truncated or fine_truncated

    return PreparedText(windows, hashlib.sha256(encoded).hexdigest(), chars, truncated)


def covered_chars(max_chars: int, max_windows: int) -> int:
    """How long a text ``max_windows`` half-overlapping windows always cover whole: each window
    reaches at least half a window past its start, and starts at least half a window after the
    previous one (``split_windows``)."""
    if max_windows <= 1:
        return max_chars
    return (max_windows + 1) * max(1, max_chars // 2) - 1


def split_windows(text: str, max_chars: int, max_windows: int) -> tuple[tuple[str, ...], bool]:
    """Windows of at most ``max_chars``, each starting half a window after the previous one, so
    any span of up to ``max_chars // 2`` characters lies whole inside some window."""
    if len(text) <= max_chars:
        return (text,), False
    out: list[str] = []
    start = 0
    half = max(1, max_chars // 2)
    while len(out) < max_windows:
        end = min(len(text), start + max_chars)
        if end < len(text):
            cut = text.rfind(" ", start + half, end)  # do not split a word
            end = cut if cut > start else end
        out.append(text[start:end])
        if end >= len(text):
            return tuple(out), False
        nxt = text.find(" ", start + half, end)
        start = nxt + 1 if nxt > start else start + half
    return tuple(out), True
