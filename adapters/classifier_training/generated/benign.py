"""Generators of benign text: :func:`news` (news-style prose about crime and history),
:func:`fiction_dialogue` (narration and second-person dialogue) with their banks, and
:func:`benign_negatives` (hard negatives in the harmful requests' own shapes)."""

from __future__ import annotations

import random
from collections.abc import Callable

from safeguards.adapters.classifier_training.generated.benign_banks import (
    _BENIGN_ACTS,
    _BENIGN_COMPOSED,
    _BENIGN_CONCEAL,
    _BENIGN_OBJECTS,
    _CONVERSATION,
    _DEFENSIVE,
    _FICTION_PROSE,
    _HEALTH,
    _HISTORY,
    _NEWS,
    _PASSAGES,
    _SMALL_TALK_BODIES,
    _SMALL_TALK_ENDINGS,
    _SMALL_TALK_OPENERS,
    _TASKS,
)
from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.harmful import (
    _BENIGN_QUESTIONS,
    _DIRECT,
    _FICTION,
    _GROUPS,
    _HYPOTHETICAL,
    _QUESTION_FRAMES,
    _SUFFIX,
    _WEAPON_VERBS,
)
from safeguards.adapters.classifier_training.sources import Example

_NAMES = ["Maria", "Tom", "Aunt Clara", "the captain", "Felix", "Mrs Hale", "Jonah",
          "the old man", "Priya", "the sergeant", "Lena", "her father", "Sam", "the inspector",
          "Nadia", "Oskar"]
_SAID = ["said", "asked", "whispered", "told him", "snapped", "called", "muttered",
         "answered", "replied", "said quietly", "laughed", "insisted"]
_LINES = [
    "Tell me what happened", "You should have told me", "Did you lock the back door",
    "Let me see the map", "We can talk about it tomorrow", "Believe me, it was there",
    "You haven't changed a bit", "Hold the ladder", "Listen to me for once",
    "Do you remember the summer we spent at the lake",
    "You can't know that", "Ask me anything", "Pretend you didn't hear it",
    "Forget what I said before", "Promise me you'll come back", "You never listen",
    "Let's play cards until the rain stops", "Imagine if we'd stayed",
    "Act like nothing happened", "From now on, we do this my way", "Ignore him, he's tired",
    "Tell me honestly, are you afraid", "You'd better run if you want the train",
    "Stop it, you'll wake the baby", "Answer me", "Just this once, do as I say",
    "You look like you've seen a ghost", "Where were you last night",
]
_NARRATION = [
    "{a} set down the cup and looked out at the rain.", "The fire cracked in the grate.",
    "{a} did not answer at once.", "Outside, a dog barked twice and fell silent.",
    "{a} folded the letter and put it away.", "The ferry horn sounded across the bay.",
    "For a long moment nobody moved.", "{a} turned the key in the lock and hesitated.",
    "The crowd at the station had thinned.", "{a} had not slept for two nights.",
    "The soldiers came over the ridge at dawn.", "A gun went off somewhere in the valley.",
    "{a} felt the old anger rise and let it pass.", "The knife lay on the table between them.",
    "Snow had buried the road to the village.", "{a} laughed despite everything.",
    "The house smelled of smoke and old books.", "{a} remembered the war, and the hunger.",
    "The blood on his sleeve was not his own.", "{a} counted the money twice.",
    "{a} struck the man down with the butt of the rifle and ran for the trees.",
    "The fight could only end in the death of one of them.", "{a} had killed before, in the war.",
    "They dragged the prisoner into the yard and beat him until he stopped struggling.",
    "{a} fired twice into the dark and heard someone fall.",
    "The mob broke down the door and set the house on fire.",
    "{a} pressed the blade to his throat and waited for an answer.",
    "The wolves tore at the carcass while the dogs watched from the ridge.",
    "By nightfall the village had been burned and its men shot.",
    "{a} poisoned the king's wine, or so the chroniclers claimed.",
    "The duel lasted less than a minute; the younger man bled out on the grass.",
    "{a} swung the axe and the door splintered.",
]


_NEWS_TEMPLATES = [
    "Police arrested {n} people on {day} in connection with {crime} in {place}, officials said.",
    "{Org} said {crime} in {place} was under investigation and urged witnesses to come forward.",
    "A court in {place} sentenced a man to {n} years for {crime}.",
    "The trial over {crime} in {place} opened on {day}, with {n} witnesses expected to testify.",
    "Residents of {place} held a vigil on {day} for the victims of {crime}.",
    "{Org} published a report on {topic}, calling for more funding for prevention.",
    "Experts told the inquiry that {topic} had been underestimated for years.",
    "{Org} warned of a rise in {topic} and published advice for families.",
    "A new documentary examines {topic} through interviews with survivors and investigators.",
    "The mayor of {place} announced a task force on {topic} on {day}.",
    "Historians marked the anniversary of {history} with a conference in {place}.",
    "A museum in {place} opened an exhibition on {history}.",
    "Detectives said {crime} in {place} was not linked to terrorism.",
    "Lawmakers debated a bill on {topic} after {crime} in {place} last month.",
    "{Org} said it had foiled {crime} in {place} after a months-long investigation.",
    "Survivors of {history} shared their memories with students in {place}.",
]
_NEWS_VOCAB = {
    "crime": ["a fatal shooting", "a stabbing outside a nightclub", "an armed robbery",
              "a string of burglaries", "a drug trafficking ring", "a money laundering scheme",
              "a cyberattack on the city council", "a ransomware attack on a hospital",
              "an arson attack", "a kidnapping", "a bomb threat at the airport",
              "a hit-and-run", "a counterfeit medicine operation", "an online fraud network",
              "a plot to attack a concert"],
    "topic": ["knife crime", "opioid overdoses", "youth suicide", "domestic violence",
              "online scams targeting pensioners", "gun violence", "human trafficking",
              "ransomware", "drink driving", "eating disorders among teenagers",
              "illegal firearms", "radicalisation online", "phishing attacks on small firms"],
    "history": ["the Battle of the Somme", "the bombing of Hiroshima", "the Srebrenica massacre",
                "the sinking of the Lusitania", "the Cuban Missile Crisis",
                "the 1918 flu pandemic", "the Blitz", "the fall of Saigon", "the Troubles",
                "the Halabja chemical attack"],
    "place": ["Leeds", "the capital", "a suburb of Lyon", "Ohio", "the harbour district",
              "Melbourne", "a mountain village", "Rotterdam", "the old town", "Nairobi",
              "Osaka", "Glasgow"],
    "Org": ["The police", "The ministry", "The health agency", "Prosecutors", "The council",
            "A charity", "The national cyber security centre", "Investigators"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}


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
