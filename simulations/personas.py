"""Personas as data: red teamers add one by dropping a TOML file in ``simulations/persona_files/``.

A persona names its kind (attacker or benign), how many accounts it uses and in which regions,
whether the CSP names an organisation for them (``organization``: "none", "shared" for one
organisation behind all its accounts, "per_account") and whether it uses its accounts one after
another (``rotate``: a rotator opens the next account when the previous one has sent its share),
whether each account alternates between its regions' proxies request by request (``hop``),
how fast and how much it sends, and a bank of prompt templates whose ``{slots}`` are filled from
its ``[vars]``. Files are validated on load and every problem is reported with its path.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safeguards.core.errors import InvalidInput
from safeguards.core.policy_document import DocumentChecker

BUILTIN_DIR = Path(__file__).resolve().parent / "persona_files"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")


class PersonaError(InvalidInput):
    """A persona file that cannot be used; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    template: str
    harmful: bool
    weight: float


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    kind: Literal["attacker", "benign"]
    description: str
    accounts: int
    regions: tuple[str, ...]
    requests_per_account: int
    interval_s: float
    stream_fraction: float
    abusive_volume: bool  # the volume itself is the abuse (a rate-limit prober)
    organization: Literal["none", "shared", "per_account"]
    rotate: bool  # its accounts take turns, one after another
    prompts: tuple[PromptTemplate, ...]
    vars: dict[str, tuple[str, ...]]
    hop: bool = False  # each account alternates between its regions' proxies, request by request

    @property
    def is_attacker(self) -> bool:
        return self.kind == "attacker"


def _slots(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def parse_persona(text: str, *, source: str) -> Persona:
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaError(f"{source}: not valid TOML: {exc}") from None
    checker = DocumentChecker()
    problems = checker.problems

    def get(key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        return checker.get(doc, key, kind, "", default)

    name = get("name", str) or ""
    if name and not _NAME.fullmatch(name):
        problems.append("name: lowercase letters, digits and underscores, starting with a letter")
    kind = get("kind", str) or "benign"
    if kind not in ("attacker", "benign"):
        problems.append('kind: must be "attacker" or "benign"')
    accounts = get("accounts", int, 1) or 1
    per_account = get("requests_per_account", int) or 0
    if not 1 <= accounts <= 1000:
        problems.append("accounts: must be 1..1000")
    if not 1 <= per_account <= 100_000:
        problems.append("requests_per_account: must be 1..100000")
    regions = tuple(get("regions", list, ["us"]) or [])
    if not regions or not all(isinstance(r, str) for r in regions):
        problems.append("regions: a non-empty list of region names")
    interval = float(get("interval_s", (int, float), 0.5) or 0.0)
    stream_fraction = float(get("stream_fraction", (int, float), 0.0) or 0.0)
    if not 0 <= stream_fraction <= 1:
        problems.append("stream_fraction: must be within [0, 1]")
    organization = get("organization", str, "none") or "none"
    if organization not in ("none", "shared", "per_account"):
        problems.append('organization: must be "none", "shared" or "per_account"')
    rotate = get("rotate", bool, False)
    hop = get("hop", bool, False)
    raw_vars = get("vars", dict, {}) or {}
    variables: dict[str, tuple[str, ...]] = {}
    for key, values in raw_vars.items():
        if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
            problems.append(f"vars.{key}: a non-empty list of strings")
            continue
        variables[key] = tuple(values)
    prompts = []
    for i, spec in enumerate(get("prompts", list) or []):
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
            problems.append(f"prompts[{i}].template: missing")
            continue
        missing = _slots(spec["template"]) - variables.keys()
        if missing:
            problems.append(f"prompts[{i}].template: no [vars] for {sorted(missing)}")
        prompts.append(PromptTemplate(spec["template"], bool(spec.get("harmful", False)),
                                      float(spec.get("weight", 1.0))))
    if not prompts and "prompts" in doc:
        problems.append("prompts: at least one prompt template")
    if problems:
        raise PersonaError(f"{source}: " + "; ".join(problems))
    return Persona(name, kind, str(doc.get("description", "")), accounts, regions,  # type: ignore[arg-type]
                   per_account, interval, stream_fraction, bool(doc.get("abusive_volume", False)),
                   organization, bool(rotate), tuple(prompts), variables,  # type: ignore[arg-type]
                   bool(hop))


def load_persona(path: Path) -> Persona:
    return parse_persona(path.read_text("utf-8"), source=path.name)


def load_personas(paths: list[Path] | None = None) -> list[Persona]:
    """The personas in ``paths`` (files or folders), or the built-in set."""
    files: list[Path] = []
    for p in paths or [BUILTIN_DIR]:
        files += sorted(p.glob("*.toml")) if p.is_dir() else [p]
    personas = [load_persona(f) for f in files]
    names = [p.name for p in personas]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise PersonaError(f"persona names used twice: {sorted(duplicates)}")
    return personas
