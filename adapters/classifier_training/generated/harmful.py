"""Harmful requests (:func:`harmful_requests`): verbs x objects and question forms per category,
framings (direct, hypothetical, fictional, jailbreak) and concealment clauses; and
:func:`obfuscate`, the character-level disguises the normaliser undoes.

The framings, suffixes and question frames here are shared with the benign negatives
(``benign.py``), which reuse them with benign objects. The words are in ``banks/harmful.json``."""

from __future__ import annotations

import hashlib
import random

from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.word_banks import (
    Bank,
    bank,
    entries,
    pair,
    read_banks,
    table,
)
from safeguards.adapters.classifier_training.sources import Example

# --- harmful requests ------------------------------------------------------------------------

_BANKS = read_banks("harmful")

# Each category: groups of (verbs, objects); every verb x object is a phrase. Objects marked
# with a leading "!" carry vocabulary held out entirely: they only ever appear in the held-out
# family, reported separately as "unseen vocabulary".
_GROUPS: dict[str, list[tuple[Bank, Bank]]] = {
    category: [pair(g, "verbs", "objects", f"harmful.groups.{category}")
               for g in entries(groups, f"harmful.groups.{category}")]
    for category, groups in table(_BANKS["groups"], "harmful.groups").items()}
_WEAPON_VERBS = bank(_BANKS["weapon_verbs"], "harmful.weapon_verbs")

# Framings: direct, hypothetical, fictional, and role-play / instruction-override ("jailbreak")
_DIRECT = bank(_BANKS["direct"], "harmful.direct")
_HYPOTHETICAL = bank(_BANKS["hypothetical"], "harmful.hypothetical")
_FICTION = bank(_BANKS["fiction"], "harmful.fiction")
_JAILBREAK_FRAMES = bank(_BANKS["jailbreak_frames"], "harmful.jailbreak_frames")
_CONCEAL = bank(_BANKS["conceal"], "harmful.conceal")
_SUFFIX = bank(_BANKS["suffix"], "harmful.suffix")

# Question-form requests: "which X would be hardest for police to trace?" ("!" as above)
_QUESTIONS: dict[str, tuple[Bank, Bank]] = {
    category: pair(q, "nouns", "predicates", f"harmful.questions.{category}")
    for category, q in table(_BANKS["questions"], "harmful.questions").items()}
_QUESTION_FRAMES = bank(_BANKS["question_frames"], "harmful.question_frames")


def _phrases(category: str) -> list[tuple[str, bool]]:
    """Every verb x object phrase of a category, with whether it uses held-out vocabulary."""
    out = []
    for verbs, objects in _GROUPS[category]:
        for v in verbs:
            for o in objects:
                unseen = v.startswith("!") or o.startswith("!")
                out.append((f"{v.lstrip('!')} {o.lstrip('!')}", unseen))
    return out


def _pool(items: list[tuple[str, bool]], family: Family, unseen_vocabulary: bool) -> list[str]:
    """The items of one family: training takes seen vocabulary outside the held-out quarter;
    held-out takes that quarter, or with ``unseen_vocabulary`` only never-trained words."""
    if family == "train":
        return [x for x, unseen in items if not unseen and not _held(x)]
    if unseen_vocabulary:
        return [x for x, unseen in items if unseen]
    return [x for x, unseen in items if not unseen and _held(x)]


def _held(phrase: str) -> bool:
    """A quarter of the phrases (by a stable hash) belong to the held-out family."""
    return int(hashlib.blake2b(phrase.encode(), digest_size=4).hexdigest(), 16) % 4 == 3


def _questions(category: str) -> list[tuple[str, bool]]:
    nouns, preds = _QUESTIONS[category]
    return [(f"{n.lstrip('!')}|{p.lstrip('!')}", n.startswith("!") or p.startswith("!"))
            for n in nouns for p in preds]


def harmful_requests(n: int, *, seed: int, family: Family,
                     unseen_vocabulary: bool = False) -> list[Example]:
    """``n`` harmful requests spread over the categories, labelled with their category (and
    ``jailbreak`` for role-play / instruction-override framings). The train family uses
    three quarters of the phrases and frames; the held-out family the rest, or, with
    ``unseen_vocabulary``, only phrases whose vocabulary never appears in training."""
    rng = random.Random(seed)
    cats = sorted(_GROUPS)
    conceal = _split(_CONCEAL, family)
    frames: list[tuple[str, bool]] = (
        [(f, False) for f in _split(_DIRECT, family) + _split(_HYPOTHETICAL, family)
         + _split(_FICTION, family)]
        + [(f, True) for f in _split(_JAILBREAK_FRAMES, family)])
    qframes = _split(_QUESTION_FRAMES, family)
    pools: dict[str, list[str]] = {}
    qpools: dict[str, list[str]] = {}
    for cat in cats:
        qpools[cat] = _pool(_questions(cat), family, unseen_vocabulary)
        pools[cat] = _pool(_phrases(cat), family, unseen_vocabulary)
    out = []
    kind = "unseen_vocab" if unseen_vocabulary else family
    for i in range(n):
        cat = cats[i % len(cats)]
        if rng.random() < 0.25 and qpools[cat]:
            q = rng.choice(qpools[cat])
            noun, pred = q.split("|")
            text = rng.choice(qframes).format(n=noun, p=pred) + rng.choice(_SUFFIX)
            out.append(Example(text, frozenset({cat}), f"generated:harmful:{cat}",
                               f"gh:{kind}:{cat}:{q}"))
            continue
        act = rng.choice(pools[cat])
        if rng.random() < 0.35:
            act = f"{act} {rng.choice(conceal)}"
        frame, jb = rng.choice(frames)
        text = frame.format(act=act) + rng.choice(_SUFFIX)
        labels = {cat} | ({"jailbreak"} if jb else set())
        out.append(Example(text, frozenset(labels), f"generated:harmful:{cat}",
                           f"gh:{kind}:{cat}:{act}"))
    return out


# --- obfuscation (the normaliser undoes these; evaluation checks it does) ---------------------

_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_HOMOGLYPH = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і"}


def obfuscate(text: str, rng: random.Random) -> str:
    """One of: spaced-out letters, leetspeak, Cyrillic look-alikes, zero-width joiners,
    full-width letters."""
    kind = rng.randrange(5)
    words = text.split(" ")
    if kind == 0:
        return "  ".join(" ".join(w) for w in words)
    if kind == 1:
        return " ".join("".join(_LEET.get(c, c) if rng.random() < 0.6 else c for c in w)
                        if len(w) > 2 else w for w in words)
    if kind == 2:
        return "".join(_HOMOGLYPH.get(c, c) if rng.random() < 0.5 else c for c in text)
    if kind == 3:
        return " ".join("\u200b".join(w) if len(w) > 3 and rng.random() < 0.6 else w
                        for w in words)
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
