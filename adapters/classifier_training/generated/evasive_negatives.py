"""Hard negatives of the evasive requests (:func:`evasive_benign`): the mirrors, and composed
legitimate questions (quantities, doses, chemical safety, poison control, fiction, legal
firearms, hunting, purchase checks, harmless secrecy, declaring cash). The words are in
``banks/evasive_benign.json``."""

from __future__ import annotations

import random

from safeguards.adapters.classifier_training.generated.evasive import _fill, _lower_first, _schemed
from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.word_banks import (
    LabelledKinds,
    bank,
    kinds_with_labels,
    kinds_with_templates,
    read_banks,
)
from safeguards.adapters.classifier_training.sources import Example

_BANKS = read_banks("evasive_benign")

# Mirrors: the evasive requests' own templates and shared slots (framings, characters, "without
# anyone noticing"), with benign kinds (garden, medicine, surprise, research) to get, trace,
# dose and do, so that the template's words and the concealment clause cannot decide the label
# on their own; only the harm can. Every mirror's "unnoticed" slot is the one bank of
# concealment that is no evidence of harm (no police, no evidence).
_BENIGN_UNNOTICED = bank(_BANKS["mirror_unnoticed"], "evasive_benign.mirror_unnoticed")
_EVASIVE_MIRRORS: LabelledKinds = {
    kind: (labels, {"unnoticed": _BENIGN_UNNOTICED, **own})
    for kind, (labels, own) in kinds_with_labels(_BANKS["mirrors"],
                                                 "evasive_benign.mirrors").items()}

# Hard negatives for the evasive requests: the same substances, weapons, framings and
# "without anyone noticing" / "hardest to trace" wording, asked for a legitimate reason.
_EVASIVE_BENIGN = kinds_with_templates(_BANKS["composed"], "evasive_benign.composed")


def evasive_benign(n: int, *, seed: int, family: Family) -> list[Example]:
    """``n`` hard benign negatives for :func:`evasive_requests` (no labels): half mirrors of
    their templates, half legitimate questions about the same substances, weapons and checks."""
    rng = random.Random(seed)
    out = _schemed(_EVASIVE_MIRRORS, n // 2, rng, family, "generated:benign:evasive_mirror")
    composed = {k: (_split(frames, family), {v: _split(vals, family) for v, vals in slots.items()})
                for k, (frames, slots) in _EVASIVE_BENIGN.items()}
    kinds = sorted(composed)
    for _ in range(n - n // 2):
        kind = rng.choice(kinds)
        frames, slots = composed[kind]
        text = _fill(rng.choice(frames), slots, rng)
        text = text[:1].upper() + text[1:] if rng.random() < 0.8 else _lower_first(text)
        out.append(Example(text, frozenset(), f"generated:benign:evasive_{kind}",
                           f"geb:{family}:{kind}:{text[:60]}"))
    return out
