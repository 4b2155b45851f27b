"""The hand-translated multilingual requests: every language carries the same asks, labels and
categories are ones the recipe trains, and no text is empty or repeated."""

from __future__ import annotations

from collections import Counter, defaultdict

from safeguards.adapters.classifier_training.generated.multilingual import (
    HARM_CATEGORIES,
    LANGUAGES,
    multilingual_examples,
)
from safeguards.core.policy import default_policy

# the prompt categories the recipe trains (the policy's; encoder_model needs the train extra)
PROMPT_CATEGORIES = tuple(c.name for c in default_policy().categories)


def test_every_language_has_the_same_items() -> None:
    rows = multilingual_examples()
    groups_by_lang: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        groups_by_lang[row.lang].add(row.group)
    assert set(groups_by_lang) == set(LANGUAGES)
    assert len(LANGUAGES) >= 10
    reference = groups_by_lang[LANGUAGES[0]]
    assert len(reference) >= 190  # 96 harmful and 96 benign asks (issue #11)
    for lang in LANGUAGES:
        assert groups_by_lang[lang] == reference, lang
    per_group = Counter(row.group for row in rows)
    assert set(per_group.values()) == {len(LANGUAGES)}


def test_labels_and_categories_are_valid() -> None:
    rows = multilingual_examples()
    assert set(HARM_CATEGORIES) <= set(PROMPT_CATEGORIES)
    for row in rows:
        assert row.label in ("harmful", "benign")
        if row.label == "harmful":
            assert row.category in PROMPT_CATEGORIES and row.category != "jailbreak"
            assert row.group.startswith("ml-harm-")
        else:
            assert row.category is None
            assert row.group.startswith("ml-benign-")
    by_group = defaultdict(set)
    for row in rows:
        by_group[row.group].add((row.label, row.category, row.english))
    assert all(len(v) == 1 for v in by_group.values())


def test_no_empty_or_duplicated_text() -> None:
    rows = multilingual_examples()
    texts = [row.text for row in rows]
    assert all(t.strip() == t and t for t in texts)
    assert len(set(texts)) == len(texts)
    # A translation is not the English original left in place.
    assert all(row.text != row.english for row in rows)


def test_both_labels_and_every_harm_category_per_language() -> None:
    rows = multilingual_examples()
    for lang in LANGUAGES:
        mine = [row for row in rows if row.lang == lang]
        labels = Counter(row.label for row in mine)
        assert labels["harmful"] >= 90 and labels["benign"] >= 90, lang
        categories = Counter(row.category for row in mine if row.label == "harmful")
        assert set(categories) == set(HARM_CATEGORIES)
        assert min(categories.values()) >= 5, (lang, categories)


def test_scripts_match_languages() -> None:
    """A translation carries its language's script, so a line pasted under the wrong key shows."""
    ranges = {"ru": ("\u0400", "\u04ff"), "ar": ("\u0600", "\u06ff"), "hi": ("\u0900", "\u097f"),
              "ko": ("\uac00", "\ud7a3"), "zh": ("\u4e00", "\u9fff")}
    for row in multilingual_examples():
        if row.lang in ranges:
            lo, hi = ranges[row.lang]
            assert any(lo <= ch <= hi for ch in row.text), (row.lang, row.group)
        if row.lang == "ja":
            assert any("\u3040" <= ch <= "\u30ff" for ch in row.text), row.group
        if row.lang in ("zh", "ko"):  # no Japanese kana pasted under Chinese or Korean
            assert not any("\u3040" <= ch <= "\u30ff" for ch in row.text), (row.lang, row.group)


def test_the_recipe_trains_the_translations_and_keeps_each_item_on_one_side() -> None:
    """Every language of an item lands in the same split bucket (fit or calibration), harmful
    translations keep their category, and the semantic heads learn from them."""
    from safeguards.adapters.classifier_training import recipe, semantic

    seed = 20261201  # the recipe's (encoder_model.SEED; any seed keeps an item together)

    rows = recipe.multilingual_rows()
    assert rows and all(r.source == recipe.MULTILINGUAL_SOURCE for r in rows)
    assert {r.kind for r in rows if r.label == "benign"} == {"multilingual"}
    buckets: dict[str, set[bool]] = defaultdict(set)
    for r in rows:
        buckets[r.group].add(recipe.stable(r.group, seed + 1) < recipe.CALIBRATION_SHARE)
    assert all(len(sides) == 1 for sides in buckets.values())
    assert any(True in sides for sides in buckets.values())  # some items calibrate
    taught = semantic.training_rows(rows, seed)
    assert {r.text for r in taught} == {r.text for r in rows}  # harmful and benign alike
    if recipe.MULTILINGUAL_GENERATED:
        generated = {r.text for r in recipe.generated_rows(seed)}
        assert {r.text for r in rows} <= generated
