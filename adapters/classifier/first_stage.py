"""The screening cascade's first stage: a hashed word n-gram linear model, tens of microseconds
a request, that clears text the contextual model would not flag and passes the rest on.

It never refuses and never strikes: it only decides which screened requests (fresh and L0
accounts) skip the contextual model inline. What it clears is still served and scored in the
background from the content stream like every request, so an account's history loses nothing;
only the inline refusal of a first harmful request rests on it passing what it should.

It is trained by distillation (``train/first_stage.py``): its target is "the contextual model
flags this, or nearly does, or the row is labelled harmful", and its pass threshold is read off
held-out rows so that it passes (nearly) everything the contextual model flags. Features: the
lower-cased words (``\\w+``) and word pairs, character pairs inside long words of scripts
written without spaces, and the text's length class (words, in powers of two), hashed with
CRC-32 into ``2**bits`` buckets, as a binary vector scaled to unit length. Text it has too
little familiar vocabulary for (``min_known``) is passed on, and so is text carrying an encoded
payload that the contextual model decodes (``payloads``).

Its own score also ranks what it passes on: at or above its ``hold`` point (where a small share
of benign text is, and most harmful text) a verdict ``holds``. The gate lets a held prompt of a
new or a flagged account wait longer for the contextual model, and asks the client to retry
rather than serve it unscored when that model is too busy (``gate.hold_ms``); the first stage
still refuses nothing on its own reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.encoder.tensors import read_tensors
from safeguards.adapters.classifier.errors import ModelLoadError
from safeguards.adapters.classifier.payloads import has_payload

FIRST_STAGE_DIR = Path(__file__).parent / "models" / "first_stage"
_WORD = re.compile(r"\w+")
MAX_CHARS = 8000  # features read at most this much (head and tail); longer text is passed on
LONG_WORD = 12  # a "word" this long in a script without spaces gets character pairs too


def features(text: str, bits: int) -> np.ndarray:
    """The sorted unique feature buckets of ``text``."""
    mask = (1 << bits) - 1
    words = _WORD.findall(text.lower())
    crc = zlib.crc32
    out = {crc(w.encode()) & mask for w in words}
    out.update(crc(f"{a} {b}".encode()) & mask for a, b in pairwise(words))
    for w in words:
        if len(w) >= LONG_WORD and not w.isascii():
            out.update(crc(f"#{w[i:i + 2]}".encode()) & mask for i in range(len(w) - 1))
    # how long it is, in powers of two of words: short everyday turns have few features, and
    # without it their score would be mostly the bias (they were passed on far more often)
    out.add(crc(f"#len{min(7, len(words).bit_length())}".encode()) & mask)
    return np.fromiter(sorted(out), dtype=np.int64, count=len(out))


@dataclass(frozen=True, slots=True)
class Verdict:
    clear: bool
    reason: str  # "clear", "flagged", "unfamiliar", "too_long", "encoded"
    score: float
    holds: bool = False  # passed on and at or above the hold point (``FirstStage.hold``)


class FirstStage:
    """The loaded first stage: ``check(text)`` says whether it clears ``text``."""

    def __init__(self, weights: np.ndarray, bias: float, threshold: float, min_known: float,
                 *, name: str, version: str, hold: float = math.inf) -> None:
        if weights.ndim != 1 or weights.size & (weights.size - 1):
            raise ModelLoadError("first stage: weights must be one power-of-two vector")
        self.weights = weights.astype(np.float32)
        self.bits = int(weights.size).bit_length() - 1
        self.bias, self.threshold, self.min_known = bias, threshold, min_known
        self.hold = hold  # a passed-on score this high holds (inf: none does)
        self.name, self.version = name, version

    def score(self, text: str) -> tuple[float, float]:
        """(the linear score, the share of its features the model has weights for)."""
        idx = features(text, self.bits)
        if idx.size == 0:
            return self.bias, 1.0
        w = self.weights[idx]
        known = float(np.count_nonzero(w)) / idx.size
        return self.bias + float(w.sum()) / math.sqrt(idx.size), known

    def check(self, text: str) -> Verdict:
        if len(text) > MAX_CHARS:
            return Verdict(False, "too_long", math.inf)
        if has_payload(text):
            # its words are not what the contextual model reads (``payloads``): an encoded ask
            # must reach the model that decodes it, never be cleared on its wrapper's words
            return Verdict(False, "encoded", math.inf, holds=True)
        s, known = self.score(text)
        if s >= self.threshold:
            return Verdict(False, "flagged", s, holds=s >= self.hold)
        if known < self.min_known:
            return Verdict(False, "unfamiliar", s)
        return Verdict(True, "clear", s)


def load_first_stage(directory: Path = FIRST_STAGE_DIR) -> FirstStage:
    """The committed first stage; ModelLoadError when its files are missing or damaged."""
    try:
        manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text("utf-8"))
        path = directory / str(manifest["model_file"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != manifest["sha256"]:
            raise ModelLoadError(f"first stage {path.name}: sha256 {digest[:12]} does not match "
                                 "its manifest")
        tensors = read_tensors(path)
        return FirstStage(tensors["weights"], float(manifest["bias"]),
                          float(manifest["threshold"]), float(manifest["min_known"]),
                          name=str(manifest["name"]), version=str(manifest["version"]),
                          hold=float(manifest.get("hold", math.inf)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"first stage in {directory}: {type(exc).__name__}") from None


def first_stage_or_none(without: str, directory: Path = FIRST_STAGE_DIR) -> FirstStage | None:
    """The committed first stage, or None (logged with its traceback) when it cannot load:
    ``without`` says what its users do instead (slower, never less safe)."""
    try:
        return load_first_stage(directory)
    except ModelLoadError:
        logging.getLogger(__name__).exception("the first stage did not load: %s", without)
        return None
