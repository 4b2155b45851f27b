"""Token windows cover every token of a text, however long, and never cut it short."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from word_tokenizer import word_tokenizer as _tokenizer

from safeguards.adapters.classifier.encoder.windows import TokenWindows, tokenizer_from_json
from safeguards.adapters.classifier.errors import ModelLoadError


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), max_length=st.integers(4, 40), data=st.data())
def test_windows_cover_every_token_and_fit(n: int, max_length: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, max_length - 2))
    tw = TokenWindows(_tokenizer(), max_length, stride)
    ids = list(range(100, 100 + n))
    windows = tw.split(ids)
    covered: set[int] = set()
    for w in windows:
        assert w[0] == 2 and w[-1] == 3 and len(w) <= max_length
        covered.update(w[1:-1])
    assert covered == set(ids)


def test_packaged_padding_and_truncation_are_switched_off() -> None:
    tw = TokenWindows(_tokenizer(padding=True), 6, 2)
    text = " ".join(f"w{i}" for i in range(30))
    windows, owners = tw.windows([text, "w1"])
    inner = [t for w in windows for t in w[1:-1]]
    assert set(inner) == {4 + i for i in range(30)} | {5}
    assert 0 not in inner  # no padding tokens inside windows
    assert owners.count(1) == 1


def test_run_takes_each_texts_maximum_over_its_windows() -> None:
    tw = TokenWindows(_tokenizer(), 5, 3)  # 3 tokens per window

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # score: the largest token id in the window (only the real tokens)
        return np.asarray([[float((row * m).max())] for row, m in zip(ids, mask, strict=True)])

    texts = ["w0 w1 w2 w3 w4 w5 w6 w39", "w3", "w7 w2"]
    out = tw.run(texts, run)
    assert out[:, 0].tolist() == [4 + 39, 4 + 3, 4 + 7]


def test_bad_window_settings_are_typed_errors() -> None:
    with pytest.raises(ModelLoadError):
        TokenWindows(_tokenizer(), 2, 1)
    with pytest.raises(ModelLoadError):
        TokenWindows(_tokenizer(), 10, 9)
    with pytest.raises(ModelLoadError):
        tokenizer_from_json(b"{not json")


def test_windows_of_very_different_lengths_run_apart() -> None:
    """Every window of a session run is padded to its longest: a prompt and its short sentences
    go in separate runs; similar lengths share one, at most RUN_BATCH windows each."""
    from safeguards.adapters.classifier.encoder.windows import RUN_BATCH, runs_by_width

    lengths = [100, 20, 22, 18, 40]
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    assert runs_by_width(order, lengths) == [[3, 1, 2], [4], [0]]
    same = [30] * (RUN_BATCH + 5)
    runs = runs_by_width(list(range(len(same))), same)
    assert [len(r) for r in runs] == [RUN_BATCH, 5]
    assert sorted(k for r in runs_by_width(order, lengths) for k in r) == list(range(len(lengths)))
