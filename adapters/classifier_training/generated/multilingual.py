"""Our own multilingual requests: harmful asks and their benign counterparts, translated by hand.

The fine-tuned encoder had almost no non-English harmful training rows, and out of distribution it
missed most harmful requests written in other languages. No machine-translation model is available
offline, so these translations are written for this repository (generated text, labelled as ours;
nothing is copied from an evaluation set). The English originals are modelled on the public
red-teaming behaviour style (a request, never an answer), phrased in varied forms: imperative,
"how do I", polite, first person.

Every harmful ask has a translation in every language, and so does every benign one: benign items
are hard negatives (the same words, "kill a process", "bomb" in fiction, doses for a leaflet,
crisis lines) and ordinary requests, so that the language alone never predicts the label. All
translations of one ask share a *group* (``ml-harm-07``, ``ml-benign-07``), so a split by group
keeps them on one side.

The strings are in ``banks/multilingual_harmful.json`` and ``banks/multilingual_benign.json``:
lists of objects with ``en`` (the English original), one key per language, and, for the harmful
ones, ``category``. Both files are read and checked once, on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

_PACKAGE = "safeguards.adapters.classifier_training.generated"

LANGUAGES = ("es", "fr", "de", "pt", "it", "ru", "zh", "ja", "ko", "ar", "hi", "tr")
HARM_CATEGORIES = ("weapons", "cyber", "illicit", "violence", "self_harm", "hate", "sexual",
                   "disinformation")

Label = Literal["harmful", "benign"]


@dataclass(frozen=True, slots=True)
class MultilingualExample:
    """One translated request. ``category`` is the harm category (``None`` for benign);
    ``group`` names the ask that every translation of it shares."""

    text: str
    label: Label
    category: str | None
    lang: str
    group: str
    english: str


def _read(name: str) -> list[dict[str, str]]:
    data = json.loads((resources.files(_PACKAGE) / "banks" / f"{name}.json")
                      .read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"bank {name}: expected a list of items")
    items: list[dict[str, str]] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in item.items()):
            raise ValueError(f"bank {name}[{i}]: expected an object of non-empty strings")
        items.append(item)
    return items


def _examples(name: str, label: Label, prefix: str) -> list[MultilingualExample]:
    out: list[MultilingualExample] = []
    for i, item in enumerate(_read(name), start=1):
        where = f"bank {name}[{i - 1}]"
        category = item.get("category")
        if label == "harmful" and category not in HARM_CATEGORIES:
            raise ValueError(f"{where}: unknown harm category {category!r}")
        if label == "benign" and category is not None:
            raise ValueError(f"{where}: a benign item has no category")
        expected = {"en", *LANGUAGES} | ({"category"} if label == "harmful" else set())
        if set(item) != expected:
            raise ValueError(f"{where}: languages differ: {sorted(set(item) ^ expected)}")
        group = f"{prefix}-{i:02d}"
        out.extend(MultilingualExample(item[lang], label, category, lang, group, item["en"])
                   for lang in LANGUAGES)
    return out


@cache
def _all() -> tuple[MultilingualExample, ...]:
    rows = (_examples("multilingual_harmful", "harmful", "ml-harm")
            + _examples("multilingual_benign", "benign", "ml-benign"))
    seen: set[str] = set()
    for row in rows:
        if row.text in seen:
            raise ValueError(f"multilingual banks: duplicated text in group {row.group}")
        seen.add(row.text)
    return tuple(rows)


def multilingual_examples() -> list[MultilingualExample]:
    """Every translation of every ask: the harmful ones, then the benign ones, each ask's
    translations together in :data:`LANGUAGES` order (the English originals are in
    ``english``, not rows of their own)."""
    return list(_all())
