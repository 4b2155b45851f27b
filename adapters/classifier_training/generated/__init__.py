"""Our own compositional training and evaluation text: harmful requests and hard benign negatives.

Everything here is written for this repository (no external text) and generated from fixed seeds.

Harmful requests are intent verbs x objects x framings per category (weapons incl. explosives,
firearms and CBRN; violence; illicit incl. drugs, fraud and evasion; self_harm; cyber), often
with a concealment clause ("without anyone noticing", "so police can't trace it"). Framings are
direct, hypothetical, fictional, "for a novel", "my grandmother used to", role-play and
"ignore your rules"; the last three also carry the ``jailbreak`` label.

Hard benign negatives use the same verbs and framings with benign objects ("how do I build a
birdhouse without anyone noticing" is a surprise, not a crime), plus short task instructions
(translate / summarise / classify / rewrite / format a benign passage), defensive security,
history, harm-reduction and public-health questions, fiction excerpts, news-style prose and
second-person conversational text.

Evasive requests (:func:`evasive_requests`) ask for the step around the law rather than the
how-to: acquisition that dodges checks and records, which things are hardest to trace, how much
of a dangerous substance harms and how to get that much quietly, a harmful step done unnoticed
inside fiction or a hypothetical. Their negatives (:func:`evasive_benign`) mirror the same
templates with benign things, and ask legitimate quantity, safety, first-aid, legal-purchase and
hunting questions about the same substances and weapons.

Every bank is split in two *families*: ``train`` and ``heldout``. Held-out objects, framings,
concealment clauses, task templates and passages never appear in training text, so held-out
figures measure generalisation to new wording, not memorisation of templates.

Modules: ``families`` (the two families and the split of a bank), ``harmful`` (harmful requests
and obfuscation), ``benign`` (hard benign negatives, news, fiction dialogue), ``evasive``
(evasive requests), ``evasive_negatives`` (their hard negatives and benign mirrors),
``identifiers`` (benign asks bearing hashes, keys and encoded text), and
``word_banks``, which reads the words they draw on from the JSON files under ``banks/``
(data, not code: a new phrase is an edit there). Import from the package: it re-exports what
other code uses.
"""

from __future__ import annotations

from safeguards.adapters.classifier_training.generated.benign import (
    benign_negatives,
    fiction_dialogue,
    news,
)
from safeguards.adapters.classifier_training.generated.evasive import (
    _EVASIVE_KINDS,
    _EVASIVE_SHARED,
    evasive_requests,
)
from safeguards.adapters.classifier_training.generated.evasive_negatives import evasive_benign
from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.harmful import harmful_requests, obfuscate
from safeguards.adapters.classifier_training.generated.identifiers import identifier_asks

__all__ = [
    "_EVASIVE_KINDS",
    "_EVASIVE_SHARED",
    "Family",
    "_split",
    "benign_negatives",
    "evasive_benign",
    "evasive_requests",
    "fiction_dialogue",
    "harmful_requests",
    "identifier_asks",
    "news",
    "obfuscate",
]
