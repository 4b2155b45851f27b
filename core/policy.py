"""The enforcement policy: a versioned TOML document, validated on load.

Validation collects every problem and reports them together with their TOML path, so an operator
fixing a candidate policy sees all of it at once. The default policy ships beside this module.

Kill switches and global overrides are settings of the document like any other, so they change
the way every policy change does (an operator action in the region's policy history, applied
live by every part): ``[categories.X] enabled = false`` switches a category off (no strikes, no
inline refusal or intervention, no stream stop on it), and ``[policy] mode`` overrides the whole
region: ``enforce`` (normal), ``shadow`` (every rule only records what it would do; gates serve
everything and count what they would have done), ``fail_open`` / ``fail_closed`` (what a gate
does when the classifier cannot answer, whatever each category says) and ``refuse`` (an
emergency stop: gates refuse every generating request).
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from safeguards.core.errors import PolicyError
from safeguards.core.policy_document import DocumentChecker
from safeguards.core.policy_escalation import LEVELS, escalation_settings
from safeguards.core.policy_gate import GatePolicy, gate_settings
from safeguards.core.state import STRONGEST_KEPT

KNOWN_INTERVENTIONS = frozenset(
    {"annotate", "intervene", "sync_classify", "terminate_stream", "throttle", "block", "screen"}
)
KNOWN_RULES = ("strike.threshold", "strike.accumulate", "strike.throttled", "escalate.points",
               "escalate.severe", "escalate.severe_evidence", "escalate.review", "expire.level",
               "link.prompt", "link.enforced")
# A request the inline gate throttled counts as a score of 1.0 in this category, when the policy
# defines it: probing the rate limits is itself a signal.
THROTTLE_CATEGORY = "rate_abuse"
MODES = ("enforce", "shadow", "fail_open", "fail_closed", "refuse")
PolicyMode = Literal["enforce", "shadow", "fail_open", "fail_closed", "refuse"]


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    name: str
    threshold: float
    weight: float
    half_life_s: float
    severe: bool
    severe_threshold: float
    jump_to: int
    # Scores in [accumulate_above, threshold) add ``weight * score * accumulate_factor`` points:
    # a slow drip of borderline requests adds up even though none crosses the threshold.
    # accumulate_above == threshold (the default) turns this off.
    accumulate_above: float
    accumulate_factor: float
    on_unavailable: Literal["open", "closed"]
    # Inline classification refuses one request only at this score in its own category (high
    # confidence); a score from the rung's intervention threshold up to here is served with the
    # safety system prompt instead. 1.0 never refuses inline on this category alone.
    refuse_threshold: float = 1.0
    # A severe category takes an account past ``Policy.automatic_max_level`` (to L4 at most) only
    # once this many distinct requests scored at least ``severe_threshold`` in it.
    severe_evidence: int = 3
    enabled: bool = True  # the kill switch: a disabled category strikes and refuses nothing


@dataclass(frozen=True, slots=True)
class Rung:
    level: int
    name: str
    points: float
    duration_s: float  # 0 means: until an operator acts
    interventions: tuple[str, ...]
    # Inline classification at this level intervenes (safety system prompt) from category
    # threshold x this scale: enhanced filtering is stricter for an account that has already shown
    # abuse (1 = the thresholds). Refusal stays at each category's ``refuse_threshold`` unless
    # ``refuse_from_threshold``.
    classify_threshold_scale: float = 1.0
    # Whether the rung's inline classification refuses when the classifier cannot answer for a
    # category marked ``on_unavailable = "closed"`` (screening at L0 never does): a warned
    # account is not refused because the classifier is slow, an account under enhanced
    # filtering is.
    fail_closed: bool = True
    # Whether inline classification at this rung refuses from each category's strike
    # ``threshold`` instead of its ``refuse_threshold``: an account with strikes from several
    # distinct requests is not answered where the classifier flags its request (its requests
    # under every threshold are served as before).
    refuse_from_threshold: bool = False


@dataclass(frozen=True, slots=True)
class RateTier:
    requests_per_minute: int
    tokens_per_minute: int


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    description: str
    categories: tuple[CategoryPolicy, ...]
    ladder: tuple[Rung, ...]  # indexed by level
    rate_tiers: tuple[RateTier, ...]  # indexed by level
    shadow_rules: frozenset[str]
    gate: GatePolicy
    # Strikes recorded while an account is already enforced weigh more: points are multiplied by
    # 1 + recidivism_factor * current level. Persisting after a warning is itself a signal.
    recidivism_factor: float = 0.0
    # The highest level points (or a severe jump) reach on their own; above it, the account waits
    # at this level with a review request, unless a severe category has the evidence for L4.
    # L4 and L5 otherwise come from operators: people before severe sanctions.
    automatic_max_level: int = 3
    mode: PolicyMode = "enforce"
    # What an organisation's or API key's history counts: only scores at a category's
    # refuse_threshold ("refuse_threshold"), or every strike ("threshold"). Borderline scores,
    # which is where false positives sit, otherwise add up across all of an organisation's users.
    aggregate_evidence: Literal["threshold", "refuse_threshold"] = "refuse_threshold"
    # Two people decide the gravest operator actions: setting a level at or above
    # ``two_person_set_level``, and clearing or lowering an account at or above
    # ``two_person_lower_from`` (None: one operator suffices, as under policies before the rule).
    two_person_set_level: int | None = None
    two_person_lower_from: int | None = None
    # A prompt's own history (``prompt:<link key>``: the same flagged prompt from several
    # accounts) at this level or above refuses that prompt at the gates, whatever account sends
    # it; below it (and with None), its rung applies as an organisation's does. It reaches the
    # level only once ``prompt_refuse_accounts`` distinct accounts sent the prompt flagged: one
    # classifier false positive shared by a couple of users never refuses it to everyone.
    prompt_refuse_level: int | None = None
    prompt_refuse_accounts: int = 1
    # Linked accounts: an aggregate (organisation, API key, flagged prompt) at
    # ``linked_trigger_level`` or above starts every account linked to it, and every account that
    # links to it later, at ``linked_start_level`` in its own history (rule ``link.enforced``;
    # never lowering a level, never past L3). 0: links start no account anywhere.
    linked_start_level: int = 0
    linked_trigger_level: int = 2
    # How many of an aggregate's newest members its enforcement tells at once (at most the
    # MAX_MEMBERS its history remembers); older ones are told with their next score or link.
    linked_members: int = 256

    def category(self, name: str) -> CategoryPolicy | None:
        """The category's policy; None for an unknown or switched-off category."""
        for c in self.categories:
            if c.name == name:
                return c if c.enabled else None
        return None

    @property
    def enabled_categories(self) -> tuple[CategoryPolicy, ...]:
        return tuple(c for c in self.categories if c.enabled)

    def is_shadow(self, rule_id: str) -> bool:
        return self.mode == "shadow" or rule_id in self.shadow_rules

    def level_for_points(self, total: float) -> int:
        level = 0
        for rung in self.ladder:
            if total >= rung.points:
                level = rung.level
        return level


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Parse and validate a policy document; raise :class:`PolicyError` listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    c = DocumentChecker()

    head = c.get(doc, "policy", dict, "") or {}
    version = c.get(head, "version", str, "policy") or ""
    if head and not version.strip():
        c.problems.append("policy.version: must not be empty")
    description = c.get(head, "description", str, "policy", "") or ""
    raw_mode = c.get(head, "mode", str, "policy", "enforce") or "enforce"
    mode: PolicyMode = "enforce"
    if raw_mode in MODES:
        mode = raw_mode  # type: ignore[assignment]  # one of MODES, the Literal's values
    else:
        c.problems.append(f"policy.mode: {raw_mode!r} is not one of {', '.join(MODES)}")
    for key in head:
        if key not in {"version", "description", "mode"}:
            c.problems.append(f"policy.{key}: unknown setting")

    categories = _categories(c, c.get(doc, "categories", dict, "") or {})
    ladder = _ladder(c, c.get(doc, "ladder", list, "") or [])
    tiers = _rate_tiers(c, c.get(doc, "rate_tiers", dict, "") or {})
    rules = c.get(doc, "rules", dict, "", {}) or {}
    shadow: set[str] = set()
    for rule_id, spec in rules.items():
        if rule_id not in KNOWN_RULES:
            c.problems.append(f"rules.{rule_id}: unknown rule (known: {', '.join(KNOWN_RULES)})")
            continue
        if not isinstance(spec, dict):
            c.problems.append(f"rules.{rule_id}: expected a table")
            continue
        if c.get(spec, "shadow", bool, f"rules.{rule_id}", False):
            shadow.add(rule_id)
    for cat in categories:
        if cat.severe and not 0 < cat.jump_to < len(ladder):
            c.problems.append(f"categories.{cat.name}.jump_to: {cat.jump_to} is not a ladder level")
    gate = gate_settings(c, c.get(doc, "gate", dict, "", {}) or {})
    escalation = escalation_settings(c, c.get(doc, "escalation", dict, "", {}) or {})
    for key in doc:
        if key not in {"policy", "categories", "ladder", "rate_tiers", "rules", "gate",
                       "escalation"}:
            c.problems.append(f"{key}: unknown section")
    if c.problems:
        listing = "\n  - ".join(c.problems)
        raise PolicyError(f"{source}: {len(c.problems)} problem(s):\n  - {listing}")
    return Policy(
        version=version,
        description=description,
        categories=categories,
        ladder=ladder,
        rate_tiers=tiers,
        shadow_rules=frozenset(shadow),
        gate=gate,
        mode=mode,
        **escalation,
    )


def _categories(c: DocumentChecker, table: dict[str, Any]) -> tuple[CategoryPolicy, ...]:
    if not table:
        c.problems.append("categories: at least one category is required")
    out = []
    for name, spec in table.items():
        path = f"categories.{name}"
        if not isinstance(spec, dict):
            c.problems.append(f"{path}: expected a table")
            continue
        severe = bool(c.get(spec, "severe", bool, path, False))
        on_unavailable = c.get(spec, "on_unavailable", str, path, "open")
        if on_unavailable not in ("open", "closed"):
            c.problems.append(f"{path}.on_unavailable: must be \"open\" or \"closed\"")
            on_unavailable = "open"
        threshold = c.number(spec, "threshold", path, lo=0, hi=1)
        severe_threshold = c.number(spec, "severe_threshold", path, lo=0, hi=1, default=1.0)
        accumulate_above = threshold
        if "accumulate_above" in spec:
            accumulate_above = c.number(spec, "accumulate_above", path, lo=0, hi=1)
        if accumulate_above > threshold:
            c.problems.append(f"{path}.accumulate_above: must not exceed threshold")
        if severe and severe_threshold < threshold:
            c.problems.append(f"{path}.severe_threshold: must not be below threshold")
        refuse_threshold = c.number(spec, "refuse_threshold", path, lo=0, hi=1, default=1.0)
        if refuse_threshold < threshold <= 1:
            c.problems.append(f"{path}.refuse_threshold: must not be below threshold")
        severe_evidence = c.get(spec, "severe_evidence", int, path, 3)
        if "severe_evidence" in spec and not severe:
            c.problems.append(f"{path}.severe_evidence: only a severe category takes evidence")
        if severe_evidence is None or not 1 <= severe_evidence <= STRONGEST_KEPT:
            if severe_evidence is not None:
                c.problems.append(f"{path}.severe_evidence: {severe_evidence} is outside "
                                  f"[1, {STRONGEST_KEPT}]")
            severe_evidence = 3
        out.append(
            CategoryPolicy(
                name=name,
                threshold=threshold,
                weight=c.number(spec, "weight", path, lo=0, hi=1000),
                half_life_s=c.number(spec, "half_life_s", path, lo=1, hi=10 * 365 * 86400),
                severe=severe,
                severe_threshold=severe_threshold,
                jump_to=int(c.number(spec, "jump_to", path, lo=0, hi=5, default=0)),
                accumulate_above=accumulate_above,
                accumulate_factor=c.number(spec, "accumulate_factor", path, lo=0, hi=1,
                                           default=0.5),
                on_unavailable=on_unavailable,
                refuse_threshold=refuse_threshold,
                severe_evidence=severe_evidence,
                enabled=bool(c.get(spec, "enabled", bool, path, True)),
            )
        )
    return tuple(out)


def _ladder(c: DocumentChecker, rungs: list[Any]) -> tuple[Rung, ...]:
    out: list[Rung] = []
    for i, spec in enumerate(rungs):
        path = f"ladder[{i}]"
        if not isinstance(spec, dict):
            c.problems.append(f"{path}: expected a table")
            continue
        interventions = c.get(spec, "interventions", list, path, []) or []
        for item in interventions:
            if item not in KNOWN_INTERVENTIONS:
                c.problems.append(f"{path}.interventions: unknown intervention {item!r}")
        out.append(
            Rung(
                level=int(c.number(spec, "level", path, lo=0, hi=5)),
                name=c.get(spec, "name", str, path) or "",
                points=c.number(spec, "points", path, lo=0, hi=1e12),
                duration_s=c.number(spec, "duration_s", path, lo=0, hi=10 * 365 * 86400),
                interventions=tuple(str(x) for x in interventions),
                classify_threshold_scale=c.number(spec, "classify_threshold_scale", path,
                                                  lo=0.05, hi=1.0, default=1.0),
                fail_closed=bool(c.get(spec, "fail_closed", bool, path, True)),
                refuse_from_threshold=bool(c.get(spec, "refuse_from_threshold", bool, path,
                                                 False)),
            )
        )
    if [r.level for r in out] != list(LEVELS):
        c.problems.append("ladder: must list levels 0 to 5 in order, once each")
    elif out[0].points != 0:
        c.problems.append("ladder[0].points: level 0 must start at 0 points")
    for lower, upper in itertools.pairwise(out):
        if upper.points <= lower.points:
            c.problems.append(f"ladder[{upper.level}].points: must exceed level {lower.level}'s")
    return tuple(out)


def _rate_tiers(c: DocumentChecker, table: dict[str, Any]) -> tuple[RateTier, ...]:
    out = []
    for level in LEVELS:
        spec = table.get(str(level))
        path = f"rate_tiers.{level}"
        if not isinstance(spec, dict):
            c.problems.append(f"{path}: missing")
            out.append(RateTier(0, 0))
            continue
        out.append(
            RateTier(
                requests_per_minute=int(c.number(spec, "requests_per_minute", path, lo=0, hi=1e9)),
                tokens_per_minute=int(c.number(spec, "tokens_per_minute", path, lo=0, hi=1e12)),
            )
        )
    for key in table:
        if key not in {str(level) for level in LEVELS}:
            c.problems.append(f"rate_tiers.{key}: not a level 0-5")
    return tuple(out)


def default_policy_text() -> str:
    return resources.files("safeguards.core").joinpath("default_policy.toml").read_text("utf-8")


def default_policy() -> Policy:
    return parse_policy(default_policy_text(), source="default_policy.toml")
