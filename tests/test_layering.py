"""The import layers: ``core`` imports nothing of ours but ``core``; adapters never import the
actors, the composition root (``regions``), operator tools or simulations;
actors reach adapters only through ports. What breaks a rule today is listed below with why,
and the list must stay exact: a new violation fails, and so does a listed one that is gone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "actors", "adapters", "regions", "ops", "simulations")

# (importing folder, imported package) -> the modules that do it today, and why (none left: the
# bus port removed actors -> adapters, and heap tuning moved from the root to adapters.heap)
KNOWN: dict[tuple[str, str], set[str]] = {}


def forbidden(folder: str, target: str) -> bool:
    if folder == "core":
        return target != "core"
    if folder == "adapters":
        return target in ("actors", "regions", "ops", "simulations")
    if folder == "actors":
        return target == "adapters"
    return False


def imports_of(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def violations() -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imports_of(path):
                parts = module.split(".")
                if parts[0] != "safeguards" or len(parts) < 2:
                    continue
                if forbidden(folder, parts[1]):
                    rel = path.relative_to(ROOT).as_posix()
                    found.setdefault((folder, parts[1]), set()).add(rel)
    return found


def test_the_layers_hold_except_for_the_listed_debts() -> None:
    assert violations() == KNOWN


def test_the_rule_check_sees_a_violation() -> None:
    assert forbidden("core", "adapters") and forbidden("adapters", "actors")
    assert not forbidden("core", "core") and not forbidden("regions", "adapters")


def test_the_actors_reach_the_bus_only_through_its_port() -> None:
    """No actor module imports nats-py: partitions, settlement, the relay and the node speak
    ``core.bus`` (its NATS adapter and its in-memory twin live in ``adapters.bus``)."""
    offenders = {path.relative_to(ROOT).as_posix() for path in (ROOT / "actors").rglob("*.py")
                 if any(m == "nats" or m.startswith("nats.") for m in imports_of(path))}
    assert offenders == set()


def test_the_runtime_classifier_never_imports_its_training_code() -> None:
    """Training (corpora, fine-tuning, calibration) lives in ``adapters/classifier_training``;
    the served adapter reaches it only from its command line (``classifier train ...``)."""
    runtime = ROOT / "adapters" / "classifier"
    offenders = {path.relative_to(ROOT).as_posix() for path in runtime.rglob("*.py")
                 if path.name != "cli.py" and any(
                     m.startswith("safeguards.adapters.classifier_training")
                     for m in imports_of(path))}
    assert offenders == set()
