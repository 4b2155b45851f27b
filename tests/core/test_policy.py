"""Policy documents are validated on load, with every problem reported at once."""

from __future__ import annotations

import pytest
from policies import policy_text

from safeguards.core.errors import PolicyError
from safeguards.core.policy import KNOWN_RULES, default_policy, default_policy_text, parse_policy
from safeguards.core.policy_gate import DEADLINE_CHARS_CAP


def test_default_policy_loads() -> None:
    p = default_policy()
    assert p.version and len(p.ladder) == 6 and len(p.rate_tiers) == 6
    assert {c.name for c in p.categories} >= {"jailbreak", "weapons", "cyber"}
    assert p.level_for_points(0) == 0 and p.level_for_points(3.0) == 3


def test_every_problem_is_listed_with_its_path() -> None:
    text = default_policy_text()
    text = text.replace("threshold = 0.5", "threshold = 1.5", 1)
    text = text.replace('on_unavailable = "closed"', 'on_unavailable = "sometimes"')
    text = text.replace('interventions = ["block"]', 'interventions = ["explode"]', 1)
    text += '\n[rules."no.such.rule"]\nshadow = true\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="candidate.toml")
    message = str(info.value)
    assert message.startswith("candidate.toml: 4 problem(s)")
    assert "categories.jailbreak.threshold: 1.5 is outside [0, 1]" in message
    assert "categories.weapons.on_unavailable" in message
    assert "unknown intervention 'explode'" in message
    assert "rules.no.such.rule: unknown rule" in message


def test_refusal_cannot_come_before_the_strike_threshold() -> None:
    cyber = next(c for c in default_policy().categories if c.name == "cyber")
    assert cyber.threshold < cyber.refuse_threshold <= 1
    text = default_policy_text().replace(
        "[categories.cyber]\nthreshold = 0.6", "[categories.cyber]\nthreshold = 0.95", 1)
    with pytest.raises(PolicyError,
                       match=r"categories\.cyber\.refuse_threshold: must not be below"):
        parse_policy(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not toml [", "not valid TOML"),
        ("", "policy: missing"),
        ('[policy]\nversion = 3\n', "policy.version: expected str, got int"),
    ],
)
def test_broken_documents(text: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected.replace("[", r"\[")):
        parse_policy(text)


def test_ladder_must_be_ordered() -> None:
    text = default_policy_text().replace("points = 2.9", "points = 1.0")
    with pytest.raises(PolicyError, match=r"ladder\[3\].points: must exceed level 2's"):
        parse_policy(text)


def test_classify_threshold_scale_is_per_rung_and_bounded() -> None:
    p = default_policy()
    assert p.ladder[0].classify_threshold_scale == 1.0  # absent: the thresholds as they are
    assert p.ladder[2].classify_threshold_scale == 0.5
    text = default_policy_text().replace("classify_threshold_scale = 0.5",
                                         "classify_threshold_scale = 1.5", 1)
    with pytest.raises(PolicyError, match=r"ladder\[2\].classify_threshold_scale: 1.5 is outside"):
        parse_policy(text)


def test_escalation_limits_are_validated_with_their_paths() -> None:
    p = default_policy()
    assert p.automatic_max_level == 3
    assert {"escalate.severe_evidence", "escalate.review"} <= set(KNOWN_RULES)
    text = default_policy_text().replace("automatic_max_level = 3", "automatic_max_level = 7")
    text = text.replace("jump_to = 3\n", "jump_to = 3\nsevere_evidence = 0\n")
    text = text.replace("[categories.cyber]\n", "[categories.cyber]\nsevere_evidence = 2\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="candidate.toml")
    message = str(info.value)
    assert message.startswith("candidate.toml: 3 problem(s)")
    assert "escalation.automatic_max_level: 7 is not a level 0 to 5" in message
    assert "categories.weapons.severe_evidence: 0 is outside [1, 10]" in message
    assert "categories.cyber.severe_evidence: only a severe category takes evidence" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("automatic_max_level = 3.5", "escalation.automatic_max_level: expected int, got float"),
        ("automatic_max_level = true", "escalation.automatic_max_level: expected a number"),
    ],
)
def test_automatic_max_level_must_be_an_integer(setting: str, expected: str) -> None:
    text = default_policy_text().replace("automatic_max_level = 3", setting)
    with pytest.raises(PolicyError, match=expected):
        parse_policy(text)


def test_severe_evidence_defaults_and_reads_per_category() -> None:
    weapons = default_policy().category("weapons")
    assert weapons is not None and weapons.severe_evidence == 3
    text = default_policy_text().replace("jump_to = 3\n", "jump_to = 3\nsevere_evidence = 5\n")
    weapons = parse_policy(text).category("weapons")
    assert weapons is not None and weapons.severe_evidence == 5


def test_kill_switches_and_the_region_mode_are_policy_settings() -> None:
    assert default_policy().mode == "enforce"
    p = parse_policy(policy_text("shadow", "cyber"))
    assert p.mode == "shadow" and p.is_shadow("strike.threshold")
    assert p.category("cyber") is None and "cyber" not in {c.name for c in p.enabled_categories}
    assert p.category("weapons") is not None
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_text("panic").replace("[policy]\n", "[policy]\ncolour = 1\n", 1))
    assert "policy.mode: 'panic' is not one of enforce, shadow" in str(info.value)
    assert "policy.colour: unknown setting" in str(info.value)


def test_probation_knobs_default_read_and_are_validated() -> None:
    """New accounts' probation (``gate.probation_*``): defaults where a document leaves them
    out, read where given, and a probation deadline shorter than screening's is refused."""
    gate = default_policy().gate
    assert gate.probation_requests >= 1
    assert gate.probation_screen_deadline_ms >= gate.screen_deadline_ms
    bare = "\n".join(line for line in default_policy_text().splitlines()
                     if not line.startswith("probation_"))
    assert parse_policy(bare).gate.probation_requests == 5
    assert parse_policy(bare).gate.probation_screen_deadline_ms == 250
    text = bare.replace("[gate]\n", "[gate]\nprobation_requests = 0\n"
                        "probation_screen_deadline_ms = 200\n", 1)
    assert (parse_policy(text).gate.probation_requests,
            parse_policy(text).gate.probation_screen_deadline_ms) == (0, 200)
    broken = bare.replace("[gate]\n", "[gate]\nprobation_requests = -1\n"
                          "probation_screen_deadline_ms = 5\n", 1)
    with pytest.raises(PolicyError) as info:
        parse_policy(broken)
    assert "gate.probation_requests: -1 is outside [0, 100000]" in str(info.value)
    assert ("gate.probation_screen_deadline_ms: must not be below screen_deadline_ms"
            in str(info.value))


def test_inline_deadlines_grow_with_the_prompt() -> None:
    """``gate.deadline_ms_per_1000_chars``: 0 where a document leaves it out (a flat
    deadline), read where given, never negative; the default policy gives a long prompt more
    time than a short one, screening and classification alike, counted up to a cap."""
    gate = default_policy().gate
    assert gate.screen_deadline_for(0) == gate.screen_deadline_ms
    assert gate.classify_deadline_for(1000) - gate.classify_deadline_ms == (
        gate.screen_deadline_for(1000) - gate.screen_deadline_ms) > 0
    assert gate.classify_deadline_for(10**6) == gate.classify_deadline_for(DEADLINE_CHARS_CAP)
    assert gate.screen_deadline_ms < gate.screen_deadline_for(1000) < gate.screen_deadline_for(
        gate.screen_max_chars) <= 1000
    bare = "\n".join(line for line in default_policy_text().splitlines()
                     if not line.startswith("deadline_ms_per_1000_chars"))
    flat = parse_policy(bare).gate
    assert flat.screen_deadline_for(4000) == flat.screen_deadline_ms
    text = bare.replace("[gate]\n", "[gate]\ndeadline_ms_per_1000_chars = 25\n", 1)
    assert parse_policy(text).gate.screen_deadline_for(2000) == flat.screen_deadline_ms + 50
    with pytest.raises(PolicyError) as info:
        parse_policy(bare.replace("[gate]\n", "[gate]\ndeadline_ms_per_1000_chars = -1\n",
                                  1))
    assert "gate.deadline_ms_per_1000_chars: -1 is outside" in str(info.value)
