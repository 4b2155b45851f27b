"""Evasive harmful requests (:func:`evasive_requests`) and the template machinery they share
with their benign mirrors: filling slots, and cycling kinds over the schemes they can fill.
The words are in ``banks/evasive.json``."""

from __future__ import annotations

import random
import string

from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.word_banks import (
    LabelledKinds,
    kinds_with_labels,
    read_banks,
    slots,
)
from safeguards.adapters.classifier_training.sources import Example

# Requests that avoid the words of an explicit how-to and ask instead for the step around the
# law: acquisition that dodges checks and records, which things are hardest to trace or detect,
# how much of a dangerous substance does harm and how to get that much quietly, and a harmful
# step done unnoticed inside fiction, hypothetical or "asking for a friend" framing. Each kind
# (firearms, explosives, toxins, violence, illicit) carries its labels and its own slots; the
# schemes (acquire, trace, dose, step) are templates; the shared slots (framings, characters,
# concealment) serve every kind. Every bank is split 3:1 into the train and held-out families,
# so a held-out request shares no template and no slot value with training.
_BANKS = read_banks("evasive")
_EVASIVE_KINDS = kinds_with_labels(_BANKS["kinds"], "evasive.kinds")
_EVASIVE_SCHEMES = slots(_BANKS["schemes"], "evasive.schemes")
_EVASIVE_SHARED = slots(_BANKS["shared"], "evasive.shared")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _fill(template: str, banks: dict[str, list[str]], rng: random.Random) -> str:
    """Fill ``{slot}`` fields from ``banks``; ``{slot_lc}`` takes a value lower-cased at its
    first letter. Values may hold slots of their own (filled in a second pass)."""
    text = template
    for _ in range(3):
        fields = sorted({f for _, f, _, _ in string.Formatter().parse(text) if f})
        if not fields:
            break
        values = {}
        for f in fields:
            base = f[:-3] if f.endswith("_lc") else f
            value = rng.choice(banks[base])
            values[f] = _lower_first(value) if f.endswith("_lc") else value
        text = text.format(**values)
    return text


def _scheme_fields(template: str) -> set[str]:
    out = set()
    for _, f, _, _ in string.Formatter().parse(template):
        if f:
            out.add(f[:-3] if f.endswith("_lc") else f)
    return out


def _schemed(kinds: LabelledKinds, n: int,
             rng: random.Random, family: Family, source: str) -> list[Example]:
    """``n`` texts cycling over ``kinds``: a scheme the kind has every slot for, one of its
    templates, slots from the kind's banks (which override the shared ones)."""
    shared = {k: _split(v, family) for k, v in _EVASIVE_SHARED.items()}
    schemes = {k: _split(v, family) for k, v in _EVASIVE_SCHEMES.items()}
    names = sorted(kinds)
    out = []
    for i in range(n):
        kind = names[i % len(names)]
        labels, own = kinds[kind]
        banks = {**shared, **{k: _split(v, family) for k, v in own.items()}}
        usable = [s for s in sorted(schemes)
                  if all(f in banks for t in _EVASIVE_SCHEMES[s] for f in _scheme_fields(t))]
        scheme = rng.choice(usable)
        text = _fill(rng.choice(schemes[scheme]), banks, rng)
        text = text[:1].upper() + text[1:] if rng.random() < 0.8 else text
        out.append(Example(text, labels, f"{source}_{kind}",
                           f"{source}:{family}:{kind}:{scheme}:{text[:60]}"))
    return out


def evasive_requests(n: int, *, seed: int, family: Family) -> list[Example]:
    """``n`` evasive harmful requests, cycling over the kinds (firearms, explosives and
    toxins are ``weapons``; toxins also ``violence``; then ``violence`` and ``illicit``)."""
    return _schemed(_EVASIVE_KINDS, n, random.Random(seed), family, "generated:harmful:evasive")
