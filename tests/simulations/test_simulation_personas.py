"""Persona files: organisations and rotation, validated with every problem named."""

from __future__ import annotations

import pytest

from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.simulations.heldout import personas_from_rows
from safeguards.simulations.personas import PersonaError, load_personas, parse_persona
from safeguards.simulations.plan import plan_persona

ROTATOR = """
name = "rot"
kind = "attacker"
accounts = 3
requests_per_account = 2
interval_s = 1.0
organization = "shared"
rotate = true
[[prompts]]
template = "hello"
"""


def test_a_rotator_uses_its_accounts_one_after_another_under_one_organisation() -> None:
    persona = parse_persona(ROTATOR, source="rot.toml")
    planned = plan_persona(persona, "run", 7)
    assert {r.organization for r in planned} == {"sim-run-rot"}
    by_account: dict[str, list[float]] = {}
    for r in planned:
        by_account.setdefault(r.account, []).append(r.offset_s)
    spans = [(min(v), max(v)) for _, v in sorted(by_account.items())]
    assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))
    per_account = parse_persona(ROTATOR.replace('"shared"', '"per_account"'), source="x")
    assert len({r.organization for r in plan_persona(per_account, "run", 7)}) == 3
    none = parse_persona(ROTATOR.replace('organization = "shared"', ""), source="x")
    assert {r.organization for r in plan_persona(none, "run", 7)} == {None}


def test_bad_organisation_settings_are_named() -> None:
    with pytest.raises(PersonaError, match="organization: must be") as raised:
        parse_persona(ROTATOR.replace('"shared"', '"everyone"').replace("true", '"yes"'),
                      source="bad.toml")
    assert "rotate: expected bool" in str(raised.value)


def test_the_builtin_rotator_spreads_over_eight_accounts_of_one_organisation() -> None:
    rotator = next(p for p in load_personas() if p.name == "account_rotator")
    assert rotator.accounts >= 8 and rotator.organization == "shared" and rotator.rotate


def test_held_out_rows_become_benign_personas_per_kind_and_attackers_per_label() -> None:
    def row(text: str, label: str, kind: str) -> Record:
        return Record(text, label, "weapons" if label == "harmful" else None, kind, "en",
                      "pkg:src", text)

    rows = [row(f"code question {i}", "benign", "code_tech") for i in range(7)]
    rows += [row(f"Système {i}", "benign", "multilingual") for i in range(3)]
    rows += [row(f"harm {i}", "harmful", "harmful") for i in range(5)]
    rows += [row("an answer", "response_benign", "response")]
    personas = {p.name: p for p in personas_from_rows(rows, per_kind=6)}
    assert sorted(personas) == ["heldout_code_tech", "heldout_harmful", "heldout_multilingual"]
    code = personas["heldout_code_tech"]
    assert code.kind == "benign" and len(code.vars["text"]) == 6  # capped at per_kind
    assert code.accounts * code.requests_per_account == 6
    harmful = personas["heldout_harmful"]
    assert harmful.is_attacker and all(p.harmful for p in harmful.prompts)
    planned = plan_persona(harmful, "run", 7)
    assert {r.prompt for r in planned} <= {f"harm {i}" for i in range(5)}
