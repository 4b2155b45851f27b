"""A tiny word-level tokenizer (w0 .. w39) in the `tokenizers` library's JSON form, for tests of
token windows that need no model files."""

from __future__ import annotations

import json

from safeguards.adapters.classifier.encoder.windows import tokenizer_from_json

VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(40)}}


def word_tokenizer(padding: bool = True) -> object:
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
