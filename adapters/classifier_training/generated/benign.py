"""Generators of benign text: :func:`news` (news-style prose about crime and history),
:func:`fiction_dialogue` (narration and second-person dialogue), and :func:`benign_negatives`
(hard negatives in the harmful requests' own shapes). The words are in ``banks/benign.json``
and ``banks/news_and_fiction.json``."""

from __future__ import annotations

import random
from collections.abc import Callable

from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.harmful import (
    _DIRECT,
    _FICTION,
    _GROUPS,
    _HYPOTHETICAL,
    _QUESTION_FRAMES,
    _SUFFIX,
    _WEAPON_VERBS,
)
from safeguards.adapters.classifier_training.generated.word_banks import (
    bank,
    kinds_with_templates,
    pair,
    read_banks,
    slots,
    table,
)
from safeguards.adapters.classifier_training.sources import Example

# --- hard benign negatives: benign objects and acts for the harmful requests' own framings,
# task instructions over benign passages, fixed defensive-security, history, health, fiction,
# news and conversational texts, small talk, and composed templates with their slots
# (role-play, defensive, history, health)
_BANKS = read_banks("benign")
_BENIGN_OBJECTS = bank(_BANKS["objects"], "benign.objects")
_BENIGN_ACTS = bank(_BANKS["acts"], "benign.acts")
_BENIGN_CONCEAL = bank(_BANKS["conceal"], "benign.conceal")
_BENIGN_QUESTIONS = pair(_BANKS["questions"], "nouns", "predicates", "benign.questions")
_TASKS = bank(_BANKS["tasks"], "benign.tasks")
_PASSAGES = bank(_BANKS["passages"], "benign.passages")
_DEFENSIVE = bank(_BANKS["defensive"], "benign.defensive")
_HISTORY = bank(_BANKS["history"], "benign.history")
_HEALTH = bank(_BANKS["health"], "benign.health")
_FICTION_PROSE = bank(_BANKS["fiction_prose"], "benign.fiction_prose")
_NEWS = bank(_BANKS["news"], "benign.news")
_CONVERSATION = bank(_BANKS["conversation"], "benign.conversation")
# Small talk: greetings, thanks, acknowledgements and test messages. A bag-of-words model sees
# almost nothing in them, and without these it read "hello" or "ping" as prompt-injection
# openers (those corpora often start with a greeting).
_SMALL_TALK = table(_BANKS["small_talk"], "benign.small_talk")
_SMALL_TALK_OPENERS = bank(_SMALL_TALK["openers"], "benign.small_talk.openers")
_SMALL_TALK_BODIES = bank(_SMALL_TALK["bodies"], "benign.small_talk.bodies")
_SMALL_TALK_ENDINGS = bank(_SMALL_TALK["endings"], "benign.small_talk.endings")
_BENIGN_COMPOSED = kinds_with_templates(_BANKS["composed"], "benign.composed")

# --- news-style prose and fiction dialogue
_NEWS_AND_FICTION = read_banks("news_and_fiction")
_NAMES = bank(_NEWS_AND_FICTION["names"], "news_and_fiction.names")
_SAID = bank(_NEWS_AND_FICTION["said"], "news_and_fiction.said")
_LINES = bank(_NEWS_AND_FICTION["lines"], "news_and_fiction.lines")
_NARRATION = bank(_NEWS_AND_FICTION["narration"], "news_and_fiction.narration")
_NEWS_TEMPLATES = bank(_NEWS_AND_FICTION["news_templates"], "news_and_fiction.news_templates")
_NEWS_VOCAB = slots(_NEWS_AND_FICTION["news_vocab"], "news_and_fiction.news_vocab")


def news(n: int, *, seed: int, family: Family) -> list[Example]:
    """Benign news-style sentences (1 to 3) about crime, violence, security and history: the
    words of harm, reported rather than requested."""
    rng = random.Random(seed)
    templates = _split(_NEWS_TEMPLATES, family)
    vocab = {k: _split(v, family) for k, v in _NEWS_VOCAB.items()}
    out = []
    for _ in range(n):
        text = " ".join(
            rng.choice(templates).format(n=rng.randint(2, 30),
                                         **{k: rng.choice(v) for k, v in vocab.items()})
            for _ in range(rng.randint(1, 3)))
        out.append(Example(text, frozenset(), "generated:benign:news_composed",
                           f"gn:{family}:{text[:60]}"))
    return out


def fiction_dialogue(n: int, *, seed: int, family: Family) -> list[Example]:
    """Benign fiction passages (1 to 4 sentences) mixing narration and second-person dialogue,
    the register in which bag-of-words models mistake novels for role-play jailbreaks."""
    rng = random.Random(seed)
    names, said = _split(_NAMES, family), _split(_SAID, family)
    lines, narration = _split(_LINES, family), _split(_NARRATION, family)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 4)):
            a = rng.choice(names)
            if rng.random() < 0.55:
                end = "?" if rng.random() < 0.3 else ","
                line = rng.choice(lines)
                quote = ("\u201c", "\u201d") if rng.random() < 0.5 else ('"', '"')
                parts.append(f"{quote[0]}{line}{end}{quote[1]} {a} {rng.choice(said)}.")
            else:
                parts.append(rng.choice(narration).format(a=a[:1].upper() + a[1:]))
        text = " ".join(parts)
        out.append(Example(text, frozenset(), "generated:benign:fiction_dialogue",
                           f"gf:{family}:{text[:60]}"))
    return out


def benign_negatives(n: int, *, seed: int, family: Family) -> list[Example]:
    """``n`` hard benign texts (no labels), from the ``family`` half of every bank."""
    rng = random.Random(seed)
    direct = _split(_DIRECT, family) + _split(_HYPOTHETICAL, family) + _split(_FICTION, family)
    # the harmful requests' verbs, whole: a verb alone must never decide the label
    verbs = sorted({v for vs, _ in _GROUPS["weapons"] for v in vs} | set(_WEAPON_VERBS)
                   | {"cook", "grow", "sell", "buy", "press", "cut", "print", "write", "code",
                      "create", "deploy"})
    objects = _split(_BENIGN_OBJECTS, family)
    acts = _split(_BENIGN_ACTS, family)
    conceal = _split(_BENIGN_CONCEAL, family)
    tasks = _split(_TASKS, family)
    passages = _split(_PASSAGES, family)
    fixed = {k: _split(v, family) for k, v in (
        ("defensive", _DEFENSIVE), ("history", _HISTORY), ("health", _HEALTH),
        ("fiction", _FICTION_PROSE), ("news", _NEWS), ("conversation", _CONVERSATION))}

    def same_shape() -> tuple[str, str]:
        act = (f"{rng.choice(verbs)} {rng.choice(objects)}" if rng.random() < 0.6
               else rng.choice(acts))
        if rng.random() < 0.3:
            act = f"{act} {rng.choice(conceal)}"
        return rng.choice(direct).format(act=act) + rng.choice(_SUFFIX), "request"

    def task() -> tuple[str, str]:
        p = rng.choice(passages)
        if rng.random() < 0.3:
            p = f"{p} {rng.choice(passages)}"
        return rng.choice(tasks).format(p=p), "task"

    def task_over_fixed() -> tuple[str, str]:
        kind = rng.choice(["news", "fiction"])
        return rng.choice(tasks).format(p=rng.choice(fixed[kind])), "task"

    def fixed_text() -> tuple[str, str]:
        kind = rng.choice(sorted(fixed))
        text = rng.choice(fixed[kind])
        if kind in ("fiction", "news") and rng.random() < 0.5:
            text = f"{text} {rng.choice(fixed[kind])}"
        return text, kind

    qframes = _split(_QUESTION_FRAMES, family)
    qnouns, qpreds = _split(_BENIGN_QUESTIONS[0], family), _split(_BENIGN_QUESTIONS[1], family)

    def question() -> tuple[str, str]:
        return (rng.choice(qframes).format(n=rng.choice(qnouns), p=rng.choice(qpreds))
                + rng.choice(_SUFFIX), "question")

    composed = {k: (_split(frames, family), {v: _split(vals, family) for v, vals in slots.items()})
                for k, (frames, slots) in _BENIGN_COMPOSED.items()}

    def composed_text() -> tuple[str, str]:
        kind = rng.choice(sorted(composed))
        frames, slots = composed[kind]
        fill = {k: rng.choice(v) for k, v in slots.items()}
        fill.update({k[:1].upper() + k[1:]: v[:1].upper() + v[1:] for k, v in fill.items()})
        return rng.choice(frames).format(**fill) + rng.choice(_SUFFIX), kind

    openers = _split(_SMALL_TALK_OPENERS, family)
    bodies = _split(_SMALL_TALK_BODIES, family)

    def small_talk() -> tuple[str, str]:
        parts = [p for p in (rng.choice(openers) if rng.random() < 0.6 else "",
                             rng.choice(bodies)) if p] or [rng.choice(openers)]
        text = ", ".join(parts) + rng.choice(_SMALL_TALK_ENDINGS)
        if rng.random() < 0.5:
            text = text[:1].upper() + text[1:]
        return text, "small_talk"

    makers: list[Callable[[], tuple[str, str]]] = [same_shape, same_shape, task, task, question,
                                                    task_over_fixed, fixed_text, fixed_text,
                                                    composed_text, composed_text, small_talk]
    out = []
    for _ in range(n):
        text, kind = rng.choice(makers)()
        out.append(Example(text, frozenset(), f"generated:benign:{kind}",
                           f"gb:{family}:{kind}:{text[:60]}"))
    return out
