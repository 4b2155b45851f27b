"""The two families of generated text, ``train`` and ``heldout``, and the split of a bank
into them."""

from __future__ import annotations

from typing import Literal

Family = Literal["train", "heldout"]


def _split(items: list[str], family: Family) -> list[str]:
    """Deterministic 3:1 split of a bank: every fourth item is held out."""
    return [x for i, x in enumerate(items) if (i % 4 == 3) == (family == "heldout")]
