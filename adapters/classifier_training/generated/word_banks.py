"""The word banks: read from the JSON files under ``banks/`` when the generators are imported
(``harmful``, ``benign`` and ``news_and_fiction``, ``evasive``, ``evasive_benign``), and checked
for shape as they are read, so that a malformed bank fails at import rather than as an odd
sentence deep in a training run.

Shapes, in the JSON: a *bank* is a list of strings; *slots* map a slot name to its bank; a
*pair* is two named banks; *kinds with templates* map a kind to ``{"templates": bank, "slots":
slots}``; *kinds with labels* map a kind to ``{"labels": bank, "slots": slots}``. The order of
a file's keys is kept (``json`` keeps it): some generators draw from their slots in that order.
"""

from __future__ import annotations

import json
from importlib import resources

Bank = list[str]
Slots = dict[str, Bank]
TemplatedKinds = dict[str, tuple[Bank, Slots]]  # per kind: templates, and the slots they name
LabelledKinds = dict[str, tuple[frozenset[str], Slots]]  # per kind: its labels, and its own slots

_PACKAGE = "safeguards.adapters.classifier_training.generated"


def read_banks(name: str) -> dict[str, object]:
    """The banks of ``banks/<name>.json``."""
    data = json.loads((resources.files(_PACKAGE) / "banks" / f"{name}.json")
                      .read_text(encoding="utf-8"))
    return table(data, name)


def bank(value: object, where: str) -> Bank:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"word bank {where}: expected a list of strings")
    return value


def slots(value: object, where: str) -> Slots:
    return {k: bank(v, f"{where}.{k}") for k, v in table(value, where).items()}


def kinds_with_templates(value: object, where: str) -> TemplatedKinds:
    return {k: (bank(_field(v, "templates", f"{where}.{k}"), f"{where}.{k}.templates"),
                slots(_field(v, "slots", f"{where}.{k}"), f"{where}.{k}.slots"))
            for k, v in table(value, where).items()}


def kinds_with_labels(value: object, where: str) -> LabelledKinds:
    return {k: (frozenset(bank(_field(v, "labels", f"{where}.{k}"), f"{where}.{k}.labels")),
                slots(_field(v, "slots", f"{where}.{k}"), f"{where}.{k}.slots"))
            for k, v in table(value, where).items()}


def pair(value: object, first: str, second: str, where: str) -> tuple[Bank, Bank]:
    """``{first: bank, second: bank}`` as a tuple of the two banks."""
    return (bank(_field(value, first, where), f"{where}.{first}"),
            bank(_field(value, second, where), f"{where}.{second}"))


def entries(value: object, where: str) -> list[object]:
    """A list of banks, pairs or tables."""
    if not isinstance(value, list):
        raise ValueError(f"word bank {where}: expected a list")
    return value


def table(value: object, where: str) -> dict[str, object]:
    """A map from names (categories, kinds) to what each holds."""
    if not isinstance(value, dict):
        raise ValueError(f"word bank {where}: expected a map")
    return value


def _field(value: object, key: str, where: str) -> object:
    fields = table(value, where)
    if key not in fields:
        raise ValueError(f"word bank {where}: missing {key!r}")
    return fields[key]
