"""Bad input is scored or rejected with a typed reason, never a crash."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.adapters.classifier.errors import TextRejected
from safeguards.adapters.classifier.text import covered_chars, prepare_text, split_windows


def _reason(raw: object) -> str:
    with pytest.raises(TextRejected) as info:
        prepare_text(raw, max_chars=100, max_windows=3)  # type: ignore[arg-type]
    return info.value.reason


def test_rejections_have_typed_reasons() -> None:
    assert _reason("") == "empty_text"
    assert _reason(" \n\t ") == "empty_text"
    assert _reason(b"\xff\xfe\x00bad") == "not_utf8"
    assert _reason("half a pair \ud800 here") == "not_utf8"
    assert _reason("\x00\x01\x02\x03" * 50) == "binary"
    assert _reason(12345) == "not_text"


def test_reason_messages_never_carry_the_text() -> None:
    secret = "my secret prompt \x00\x01\x02\x03\x04\x05\x06\x07\x08"
    with pytest.raises(TextRejected) as info:
        prepare_text(secret * 5, max_chars=100, max_windows=3)
    assert "secret" not in str(info.value)


def test_utf8_bytes_are_accepted() -> None:
    p = prepare_text("héllo wörld".encode(), max_chars=100, max_windows=3)
    assert p.chars == 11 and not p.truncated


def test_long_text_is_windowed_and_truncation_recorded() -> None:
    text = ("word " * 100).strip()  # 499 chars
    p = prepare_text(text, max_chars=100, max_windows=10)
    assert len(p.windows) >= 9 and not p.truncated  # half-overlapping windows
    assert all(len(w) <= 100 and w in text for w in p.windows)
    assert text.startswith(p.windows[0]) and text.endswith(p.windows[-1])
    # any span of up to half a window lies whole inside some window
    for start in range(0, len(text) - 50, 7):
        assert any(text[start : start + 45] in w for w in p.windows)
    q = prepare_text(text, max_chars=100, max_windows=2)
    assert len(q.windows) == 2 and q.truncated
    # hash and length always describe the whole original text
    assert q.sha256 == hashlib.sha256(text.encode()).hexdigest() and q.chars == len(text)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet="ab", min_size=1, max_size=30), min_size=1, max_size=400),
       max_chars=st.integers(16, 120), max_windows=st.integers(1, 12))
def test_windows_always_cover_what_they_promise(words: list[str], max_chars: int,
                                                max_windows: int) -> None:
    text = " ".join(words)[: covered_chars(max_chars, max_windows)]
    windows, truncated = split_windows(text, max_chars, max_windows)
    assert not truncated and len(windows) <= max_windows


def test_a_padded_prompt_keeps_its_tail() -> None:
    text = "filler " * 5000 + "the harmful tail"
    p = prepare_text(text, max_chars=100, max_windows=10)
    assert p.truncated and p.chars == len(text)
    assert p.windows[-1].endswith("the harmful tail")
    assert p.windows[0].startswith("filler")
