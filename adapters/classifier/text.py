"""Input checks before scoring: empty, non-UTF-8, binary and huge content get a typed outcome.

Long text is cut into windows of the model's ``max_chars`` (each window is scored and a
category's score is its maximum over windows), so harmful content cannot hide behind benign
padding; only past ``max_windows`` windows is the rest dropped, and that is recorded as
``truncated``. The hash and length always describe the whole original text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field

from safeguards.adapters.classifier.errors import TextRejected

BINARY_CONTROL_FRACTION = 0.10  # share of control characters above which content is binary


@dataclass(frozen=True, slots=True)
class PreparedText:
    windows: tuple[str, ...] = field(repr=False)
    sha256: str
    chars: int  # length of the original text, in code points
    truncated: bool  # windows beyond max_windows were not scored


def prepare_text(raw: str | bytes, *, max_chars: int, max_windows: int) -> PreparedText:
    """Check and window one piece of content, or raise :class:`TextRejected` with a reason."""
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
    controls = sum(
        1 for ch in sample if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs")
    )
    if controls > BINARY_CONTROL_FRACTION * len(sample):
        raise TextRejected("binary", f"{controls} control characters in {len(sample)}")
    windows = _windows(text, max_chars, max_windows)
    truncated = len(text) > max_chars * max_windows
    return PreparedText(windows, hashlib.sha256(encoded).hexdigest(), len(text), truncated)


def _windows(text: str, max_chars: int, max_windows: int) -> tuple[str, ...]:
    if len(text) <= max_chars:
        return (text,)
    out: list[str] = []
    start = 0
    while start < len(text) and len(out) < max_windows:
        end = min(len(text), start + max_chars)
        if end < len(text):
            # cut at whitespace so a word is not split across windows
            cut = text.rfind(" ", start + max_chars // 2, end)
            end = cut if cut > start else end
        out.append(text[start:end])
        start = end
    return tuple(out)
