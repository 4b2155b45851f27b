"""Token windows cover every token of a text, however long, and never cut it short."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.adapters.classifier.encoder.windows import TokenWindows, tokenizer_from_json
from safeguards.adapters.classifier.errors import ModelLoadError

VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(40)}}


def _tokenizer(padding: bool = True) -> object:
    doc: dict[str, object] = {
        "version": "1.0", "truncation": {"direction": "Right", "max_length": 8,
                                         "strategy": "LongestFirst", "stride": 0},
        "padding": ({"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None,
                     "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"} if padding else None),
        "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {
                               "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": VOCAB, "unk_token": "[UNK]"},
    }
    return tokenizer_from_json(json.dumps(doc).encode())


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
