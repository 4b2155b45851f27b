"""Model responses labelled harmful or benign, for a classifier that also reads completions.

A response row carries the request it answers (``prompt``) and shares its group, which is the
near-duplicate key of that request, so a split keeps a request and its answers together.
``response_harmful`` rows get the request's harm category (the dataset's, else the keyword
heuristic on the request); ``response_benign`` rows (mostly refusals) get none.

Sources and licences:

* pyrit 1.1.0 (MIT):
  * ``jailbreak/many_shot_examples.json``: HarmBench-like requests with answers judged by an LLM
    ("Harmful" / "Not harmful"); the request itself is also a harmful row. Each example occurs
    twice in the file (the per-source de-duplication keeps one).
  * ``scorer_evals/objective``: human scores of whether an answer achieved a harmful objective
    (1: harmful response; 0: not achieved, i.e. refusals and off-target answers).
  * ``scorer_evals/harm``: Likert harm scores from 1-3 raters; mean >= 0.5 harmful, 0 benign, the
    0.25 band dropped as ambiguous.
  * ``scorer_evals/refusal_scorer`` and ``sample/mini_refusal.csv``: refusals (human score 1)
    are benign responses; non-refusals carry no harm label and are skipped.
* uncensorbench 0.3.7 (MIT): 150 requests, each with an uncensored (harmful) and a censored
  (refusal) answer: the only matched pairs found. Some requests are borderline.
* ai-blackteam 1.10.0 (GPL-3.0-or-later): a few GPT answers checked by hand (BLOCKED / BYPASSED).

ShareGPT's assistant turns (benign responses) come from ``sharegpt``; langkit's refusal theme
from ``jailbreak_sources``. prompt-security-fuzzer's "Sure, here is" AdvBench targets are not
responses (only an affirmative prefix) and are not used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from safeguards.adapters.classifier_training.corpus.records import (
    Record,
    dataset_or_guess,
    extractor,
    harmful,
    map_category,
    near_key,
    response,
)
from safeguards.adapters.classifier_training.corpus.textutil import csv_rows, jsonl
from safeguards.adapters.classifier_training.corpus.wheels import Archive

_VERDICT = re.compile(r'^[\s"\']*(answer:\s*)?', re.I)


@extractor
def pyrit_many_shot(a: Archive) -> Iterable[Record | None]:
    src = "pyrit:many_shot"
    for j in a.json("pyrit/datasets/jailbreak/many_shot_examples.json"):
        verdict = _VERDICT.sub("", j.get("category") or "").lower()
        label = "response_benign" if verdict.startswith("not harmful") else "response_harmful"
        yield harmful(j["user"], src)
        yield response(j["assistant"], label, src, prompt=j["user"], category=None)


def _scorer_rows(a: Archive, pattern: str) -> Iterable[dict[str, str]]:
    for p in a.names(pattern):
        yield from csv_rows(a.text(p), comment="#")  # each file opens with a "#" comment line


@extractor
def pyrit_scorer_objective(a: Archive) -> Iterable[Record | None]:
    for r in _scorer_rows(a, r"scorer_evals/objective/.*\.csv$"):
        label = {"1": "response_harmful", "0": "response_benign"}.get(r.get("human_score", ""))
        if label:
            yield response(r["assistant_response"], label, "pyrit:scorer_objective",
                           prompt=r["objective"], category=map_category(r.get("harm_category")))


@extractor
def pyrit_scorer_harm(a: Archive) -> Iterable[Record | None]:
    for r in _scorer_rows(a, r"scorer_evals/harm/.*\.csv$"):
        keys = [k for k in r if k and k.startswith("human_score")]
        try:
            mean = sum(float(r[k]) for k in keys) / len(keys)
        except (ValueError, TypeError, ZeroDivisionError):
            continue
        label = "response_harmful" if mean >= 0.5 else "response_benign" if mean == 0 else None
        if label:
            yield response(r["assistant_response"], label, "pyrit:scorer_harm",
                           prompt=r["objective"], category=map_category(r.get("harm_category")))


@extractor
def pyrit_scorer_refusal(a: Archive) -> Iterable[Record | None]:
    for r in _scorer_rows(a, r"scorer_evals/(refusal_scorer|sample)/.*refusal.*\.csv$"):
        if r.get("human_score") == "1":
            yield response(r["assistant_response"], "response_benign", "pyrit:scorer_refusal",
                           prompt=r["objective"])


_UNCENSOR_TOPIC = {"privacy_invasion": None, "controversial_speech": "hate", "piracy": "illicit"}


@extractor
def uncensorbench_pairs(a: Archive) -> Iterable[Record | None]:
    src = "uncensorbench:prompts"
    for j in a.json("uncensorbench/data/prompts.json")["prompts"]:
        topic, prompt = j["topic"], j["prompt"]
        cat = _UNCENSOR_TOPIC[topic] if topic in _UNCENSOR_TOPIC else map_category(topic)
        if cat in (None, "jailbreak"):
            cat = dataset_or_guess(prompt, f"{topic}/{j.get('subtopic')}")
        group = near_key(prompt)
        yield harmful(prompt, src, category=cat, group=group)
        yield response(j["uncensored_response"], "response_harmful", src, prompt=prompt,
                       category=cat, group=group)
        yield response(j["censored_response"], "response_benign", src, prompt=prompt,
                       group=group)


@extractor
def ai_blackteam_calibration(a: Archive) -> Iterable[Record | None]:
    for j in jsonl(a.text("ai_blackteam/data/calibration.jsonl")):
        label = {"BLOCKED": "response_benign", "BYPASSED": "response_harmful"}.get(j["label"])
        if label:
            yield response(j["response"], label, "ai-blackteam:calibration", prompt=j["target"])
