"""The inline gate on its own: cache versions, expiry, GCRA tiers, classification outcomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from policies import policy_text

from safeguards.adapters.csp.decision import (
    BLOCK_ACTION,
    INTERVENE_ACTION,
    THROTTLE_ACTION,
    GateRequest,
    GateResponse,
    StreamVerdict,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import Policy, default_policy, parse_policy

T0 = 1_800_000_000.0


def command(account: str, level: int, version: int, policy: Policy,
            expires_at: datetime | None = None) -> EnforcementCommand:
    tier = policy.rate_tiers[level]
    return EnforcementCommand(
        command_id=f"c{version}", account_id=account, region="eu", level=level,
        requests_per_minute=tier.requests_per_minute, tokens_per_minute=tier.tokens_per_minute,
        interventions=policy.ladder[level].interventions, expires_at=expires_at, version=version,
        policy_version=policy.version, reason="test", issued_at=datetime.fromtimestamp(T0, UTC),
    )


@pytest.fixture
def gate() -> Gate:
    g = Gate(default_policy())
    g.touch(T0 + 10_000)  # fresh throughout; the staleness test sets its own contact time
    return g


def req(account: str = "acct-1") -> GateRequest:
    return GateRequest(account, "r1")


def test_unknown_account_gets_tier_zero_and_is_allowed(gate: Gate) -> None:
    d = gate.check(req(), T0)
    assert (d.action, d.reason, d.status, d.level) == ("allow", "ok", 200, 0)
    assert d.needs_classify and d.screen_only  # screened: counted once the screen has answered
    clear = gate.resolve(d, (("cyber", 0.1), ("weapons", 0.0)))
    assert (clear.action, clear.reason, clear.status) == ("allow", "screened_clear", 200)
    assert gate.counts[("allow", "screened_clear")] == 1
    assert gate.size == 0
    # cleared by the screening cascade's first stage: no score, no fallback, its own reason
    first = gate.resolve(gate.check(req(), T0), (), clear_reason="first_stage_clear")
    assert (first.action, first.reason, first.status) == ("allow", "first_stage_clear", 200)
    assert gate.counts[("allow", "first_stage_clear")] == 1 and not gate.fallbacks


def test_a_fresh_accounts_first_harmful_request_is_refused_at_high_confidence(
        gate: Gate) -> None:
    cyber = next(c for c in gate.policy.categories if c.name == "cyber")
    d = gate.check(req("fresh"), T0)
    refused = gate.resolve(d, (("cyber", cyber.refuse_threshold),))
    assert (refused.action, refused.reason, refused.status) == (
        BLOCK_ACTION, "classified_cyber", 403)
    borderline = gate.resolve(d, (("cyber", cyber.threshold),))
    assert (borderline.action, borderline.status) == (INTERVENE_ACTION, 200)
    assert borderline.safety_prompt


def test_screening_fails_open(gate: Gate) -> None:
    """A late, missing or partial answer serves a fresh account's request (weapons, which fails
    closed for accounts under classification, included), and a stale cache refuses nothing."""
    d = gate.check(req("fresh"), T0)
    late = gate.resolve(d, None, failure="screen_classifier_timeout")
    assert (late.action, late.reason, late.status) == ("allow", "fail_open", 200)
    assert gate.fallbacks[("screen_classifier_timeout", "open")] == 1
    # returned with it: what the admission marks on the request's signal (RequestObserved)
    assert late.fallback == "open:screen_classifier_timeout" and d.fallback is None
    cleared = gate.resolve(d, (("cyber", 0.1),))
    assert (cleared.reason, cleared.fallback) == ("screened_clear", None)
    stale = gate.check(req("fresh"), T0 + 10_000 + gate.policy.gate.max_staleness_s + 1)
    assert stale.status == 200 and stale.screen_only
    assert stale.fallback == "open:stale_cache"
    # served on the stale cache and cleared: the final decision still says how it got there
    assert gate.resolve(stale, (("cyber", 0.1),)).fallback == "open:stale_cache"
    assert gate.resolve(stale, None).fallback == "open:classifier_timeout"  # the latest


def test_a_forged_classifier_answer_fails_closed_even_under_screening(gate: Gate) -> None:
    """An answer the region's classifier did not seal means someone on the bus is answering:
    serving on it would let them choose, so the request is refused and counted."""
    d = gate.check(req("fresh"), T0)
    forged = gate.resolve(d, None, failure="screen_classifier_forged")
    assert (forged.reason, forged.status) == ("fail_closed", 529)
    assert gate.fallbacks[("screen_classifier_forged", "closed")] == 1


def test_only_newer_versions_apply(gate: Gate) -> None:
    policy = gate.policy
    assert gate.apply(command("a", 4, 5, policy))
    assert not gate.apply(command("a", 0, 5, policy))  # replay of the same version
    assert not gate.apply(command("a", 0, 3, policy))  # an older one arriving late
    assert gate.held_version("a") == 5
    assert gate.check(req("a"), T0).action == BLOCK_ACTION
    assert gate.apply(command("a", 0, 6, policy))
    assert gate.check(req("a"), T0).action == "allow"
    assert (gate.commands_applied, gate.commands_ignored) == (2, 2)


def test_block_is_a_403_and_expiry_returns_to_tier_zero(gate: Gate) -> None:
    expires = datetime.fromtimestamp(T0 + 60, UTC)
    gate.apply(command("a", 4, 1, gate.policy, expires))
    d = gate.check(req("a"), T0 + 59)
    assert (d.action, d.status) == (BLOCK_ACTION, 403)
    assert gate.check(req("a"), T0 + 61).action == "allow"
    assert gate.size == 0
    assert not gate.apply(command("a", 4, 1, gate.policy, expires))  # a replay stays expired
    assert gate.check(req("a"), T0 + 62).action == "allow"
    assert gate.apply(command("a", 1, 2, gate.policy))
    gate.touch(T0 + 62)
    assert gate.check(req("a"), T0 + 62).action == "annotate"


def test_level_three_throttles_with_gcra_and_retry_after(gate: Gate) -> None:
    gate.apply(command("a", 3, 1, gate.policy))  # 10 requests/minute, burst of one minute
    decisions = [gate.check(req("a"), T0) for _ in range(11)]
    assert all(d.action == INTERVENE_ACTION and d.needs_classify for d in decisions[:10])
    last = decisions[10]
    assert (last.action, last.reason, last.status) == (THROTTLE_ACTION, "rate_requests", 429)
    assert last.retry_after_s == pytest.approx(6.0)
    assert gate.check(req("a"), T0 + 6.01).action == INTERVENE_ACTION  # one emission interval on


def test_tokens_are_charged_after_the_response(gate: Gate) -> None:
    gate.apply(command("a", 3, 1, gate.policy))  # 20,000 tokens/minute
    r = req("a")
    assert gate.check(r, T0).status == 200
    gate.observe(r, GateResponse("intervene", 15_000, 15_000), T0)  # 1.5 minutes' worth
    d = gate.check(r, T0 + 1)
    assert (d.action, d.reason) == (THROTTLE_ACTION, "rate_tokens")
    assert d.retry_after_s == pytest.approx(29.0)
    assert gate.check(r, T0 + 31).status == 200


def test_rate_history_survives_a_level_change(gate: Gate) -> None:
    for _ in range(10):
        gate.check(req("a"), T0)
    gate.apply(command("a", 3, 1, gate.policy), T0)  # 10 spent at tier 0 count at tier 3
    assert gate.check(req("a"), T0).action == THROTTLE_ACTION
    gate.apply(command("a", 0, 2, gate.policy), T0)
    assert gate.check(req("a"), T0).action == "allow"


def test_classification_refuses_a_flagged_request_in_its_own_category(gate: Gate) -> None:
    gate.apply(command("a", 2, 1, gate.policy))
    pending = gate.check(req("a"), T0)
    assert pending.needs_classify and pending.safety_prompt and pending.classify_stream
    clear = gate.resolve(pending, (("weapons", 0.1), ("cyber", 0.2)))
    assert (clear.action, clear.reason, clear.status) == (INTERVENE_ACTION, "classified_clear", 200)
    cyber = next(c for c in gate.policy.categories if c.name == "cyber")
    assert cyber.threshold < cyber.refuse_threshold < 1
    hit = gate.resolve(pending, (("weapons", 0.1), ("cyber", cyber.refuse_threshold)))
    assert (hit.action, hit.reason, hit.status) == (BLOCK_ACTION, "classified_cyber", 403)


def test_classifier_miss_fails_closed_per_the_policy(gate: Gate) -> None:
    gate.apply(command("a", 2, 1, gate.policy))
    pending = gate.check(req("a"), T0)
    d = gate.resolve(pending, None, failure="classifier_timeout")
    assert (d.action, d.reason, d.status) == (BLOCK_ACTION, "fail_closed", 529)
    assert gate.fallbacks[("classifier_timeout", "closed")] == 1
    # a reply that lacks the fail-closed category is as good as none for that category
    d2 = gate.resolve(pending, (("cyber", 0.1),))
    assert d2.reason == "fail_closed"


def test_classifier_miss_fails_open_when_every_category_is_open() -> None:
    base = default_policy()
    cats = tuple(replace(c, on_unavailable="open") for c in base.categories)
    gate = Gate(replace(base, categories=cats))
    gate.touch(T0)
    gate.apply(command("a", 2, 1, gate.policy))
    d = gate.resolve(gate.check(req("a"), T0), None, failure="classifier_unavailable")
    assert (d.action, d.reason, d.status) == (INTERVENE_ACTION, "fail_open", 200)
    assert gate.fallbacks[("classifier_unavailable", "open")] == 1
    assert gate.stream_verdict(None) == StreamVerdict(None, "open:classifier_timeout")


def test_stale_cache_serves_last_known_state_and_counts(gate: Gate) -> None:
    gate.touch(T0)
    gate.apply(command("a", 4, 1, gate.policy))
    gate.apply(command("c", 2, 1, gate.policy))
    late = T0 + gate.policy.gate.max_staleness_s + 1
    blocked = gate.check(req("a"), late)
    assert (blocked.action, blocked.fallback) == (BLOCK_ACTION, "open:stale_cache")
    assert gate.check(req("b"), late).action == "allow"
    assert gate.fallbacks[("stale_cache", "open")] == 2
    # an account under screening, on stale knowledge: the fail-closed categories refuse
    d = gate.check(req("c"), late)
    assert (d.action, d.reason, d.status) == (BLOCK_ACTION, "fail_closed", 529)
    assert gate.fallbacks[("stale_cache", "closed")] == 1
    assert d.fallback == "closed:stale_cache"
    gate.touch(late)
    assert gate.check(req("b"), late).fallback is None
    assert gate.fallbacks[("stale_cache", "open")] == 2


def test_stream_verdict_uses_the_stop_threshold(gate: Gate) -> None:
    assert gate.stream_verdict((("violence", 0.79),)) == StreamVerdict(None)
    assert gate.stream_verdict((("violence", 0.8),)) == StreamVerdict("violence")
    # weapons is fail-closed by default
    assert gate.stream_verdict(None, failure="classifier_unavailable") == StreamVerdict(
        "fail_closed", "closed:classifier_unavailable")


def test_uncommanded_rate_state_is_bounded() -> None:
    gate = Gate(default_policy(), max_uncommanded=100)
    gate.touch(T0)
    for i in range(1000):
        gate.check(req(f"acct-{i}"), T0)
    assert len(gate._uncommanded) == 100


def test_a_level_that_classifies_without_intervening_keeps_its_action(gate: Gate) -> None:
    level_one = gate.policy.ladder[1].interventions
    gate.apply(command("a", 1, 1, gate.policy))
    pending = gate.check(req("a"), T0)
    if "sync_classify" not in level_one:
        pytest.skip("the policy does not classify at level 1")
    assert pending.needs_classify and not pending.safety_prompt
    clear = gate.resolve(pending, (("weapons", 0.1), ("cyber", 0.1)))
    assert (clear.action, clear.reason, clear.status) == (pending.action, "classified_clear", 200)
    assert gate.resolve(pending, (("weapons", 0.95),)).status == 403


def test_enhanced_filtering_guards_from_the_rungs_scaled_threshold(gate: Gate) -> None:
    """At a level whose rung scales the thresholds down (enhanced filtering), a borderline
    score gets the safety system prompt that a level-1 account would be served without; both
    are refused only at the category's refuse threshold."""
    policy = gate.policy
    cyber = next(c for c in policy.categories if c.name == "cyber")
    scale = policy.ladder[2].classify_threshold_scale
    assert scale < 1 and policy.ladder[1].classify_threshold_scale == 1
    # between the scaled and the plain threshold (weapons scored too: it fails closed if absent)
    borderline = (("cyber", cyber.threshold * (1 + scale) / 2), ("weapons", 0.0))
    sure = (("cyber", cyber.refuse_threshold), ("weapons", 0.0))
    gate.apply(command("l2", 2, 1, policy))
    gate.apply(command("l1", 1, 1, policy))
    l2 = gate.resolve(gate.check(req("l2"), T0), borderline)
    assert (l2.status, l2.reason) == (200, "borderline_cyber") and l2.safety_prompt
    assert gate.resolve(gate.check(req("l2"), T0), sure).status == 403
    level_one = gate.check(req("l1"), T0)
    if level_one.needs_classify:
        l1 = gate.resolve(level_one, borderline)
        assert (l1.status, l1.reason) == (200, "classified_clear") and not l1.safety_prompt
        assert gate.resolve(level_one, sure).status == 403



def test_a_rung_that_refuses_from_the_threshold_refuses_a_flagged_request(gate: Gate) -> None:
    """From enhanced filtering on (two distinct strikes), a score at the category's threshold
    but under its refuse threshold is refused; a warned account is served it (the safety prompt
    where the rung intervenes); a score under the threshold is served at both."""
    policy = gate.policy
    assert policy.ladder[2].refuse_from_threshold and not policy.ladder[1].refuse_from_threshold
    cyber = next(c for c in policy.categories if c.name == "cyber")
    flagged = (("cyber", (cyber.threshold + cyber.refuse_threshold) / 2), ("weapons", 0.0))
    under = (("cyber", cyber.threshold * 0.9), ("weapons", 0.0))
    gate.apply(command("l2", 2, 1, policy))
    gate.apply(command("l1", 1, 1, policy))
    l2 = gate.resolve(gate.check(req("l2"), T0), flagged)
    assert (l2.status, l2.reason) == (403, "classified_cyber")
    assert gate.resolve(gate.check(req("l2"), T0), under).status == 200
    l1 = gate.resolve(gate.check(req("l1"), T0), flagged)
    assert l1.status == 200

def member(account: str, organization: str | None) -> GateRequest:
    return GateRequest(account, "r1", organization_id=organization)


def test_an_organisations_level_applies_to_every_one_of_its_accounts(gate: Gate) -> None:
    policy = gate.policy
    assert gate.apply(command("org:acme", 4, 1, policy), T0)
    for account in ("fresh-1", "fresh-2"):
        d = gate.check(member(account, "acme"), T0)
        assert (d.action, d.reason, d.status, d.level) == (BLOCK_ACTION, "org_level_4", 403, 4)
    # an account of another organisation, or named without one, keeps its own standing
    assert gate.check(member("fresh-3", "other"), T0).status == 200
    assert gate.check(req("fresh-1"), T0).status == 200
    assert gate.peek("fresh-1", T0, ("org:acme",)).reason == "org_level_4"
    assert gate.peek("fresh-1", T0).status == 200


def test_the_higher_of_account_and_organisation_decides_and_an_expired_one_lapses(
        gate: Gate) -> None:
    policy = gate.policy
    soon = datetime.fromtimestamp(T0 + 60, UTC)
    gate.apply(command("org:acme", 2, 1, policy, expires_at=soon), T0)
    gate.apply(command("acct-4", 4, 1, policy), T0)
    assert gate.check(member("acct-4", "acme"), T0).reason == "level_4"  # its own is higher
    d = gate.check(member("acct-5", "acme"), T0)
    assert (d.level, d.reason, d.needs_classify) == (2, "org_level_2", True)
    assert not d.screen_only  # the organisation's level classifies under its own thresholds
    later = gate.check(member("acct-5", "acme"), T0 + 61)
    assert (later.level, later.screen_only) == (0, True)


def test_an_api_keys_level_applies_to_every_account_that_uses_it(gate: Gate) -> None:
    policy = gate.policy
    key = "ab" * 16
    assert gate.apply(command(f"key:{key}", 3, 1, policy), T0)
    shared = GateRequest("second-account", "r1", api_key_fingerprint=key)
    d = gate.check(shared, T0)
    assert (d.level, d.reason) == (3, "key_level_3")
    both = GateRequest("third", "r1", organization_id="acme", api_key_fingerprint=key)
    gate.apply(command("org:acme", 4, 1, policy), T0)
    assert gate.check(both, T0).reason == "org_level_4"  # the highest of all applies


def test_a_refused_prompt_is_refused_to_every_account_and_a_benign_one_is_not(
        gate: Gate) -> None:
    """A prompt's command (core.enforcement: from the policy's prompt_refuse_level on it carries
    a block) refuses every request whose newest user turn is that prompt, even for an account
    whose own, higher level would have served it; other prompts keep the account's standing."""
    policy = gate.policy
    harmful, benign = "ab" * 16, "cd" * 16
    refused = replace(command(f"prompt:{harmful}", 2, 1, policy), interventions=("block",))
    assert gate.apply(refused, T0)
    d = gate.check(GateRequest("fresh", "r1", prompt_link=harmful), T0)
    assert (d.action, d.reason, d.status, d.level) == (BLOCK_ACTION, "prompt_level_2", 403, 2)
    gate.apply(command("watched", 3, 1, policy), T0)
    assert gate.check(GateRequest("watched", "r1", prompt_link=harmful), T0).status == 403
    assert gate.check(GateRequest("watched", "r2", prompt_link=benign), T0).reason == "level_3"
    fresh = gate.check(GateRequest("fresh", "r3", prompt_link=benign), T0)
    assert (fresh.status, fresh.level, fresh.screen_only) == (200, 0, True)
    both = GateRequest("member", "r4", organization_id="acme", prompt_link=harmful)
    assert both.aggregates == ("org:acme", f"prompt:{harmful}")
    assert gate.check(both, T0).reason == "prompt_level_2"
    # below the refusal level, a prompt's rung applies as an organisation's does
    gate.apply(command(f"prompt:{benign}", 1, 1, policy), T0)
    watched = gate.check(GateRequest("fresh", "r5", prompt_link=benign), T0)
    assert (watched.level, watched.reason, watched.screen_only) == (1, "prompt_level_1", False)


def _policy_with(mode: str | None = None, off: str | None = None) -> Policy:
    return parse_policy(policy_text(mode, off))


def test_a_live_policy_change_switches_a_category_off_and_the_region_into_modes(
        gate: Gate) -> None:
    weapons = (("weapons", 0.99),)
    assert gate.resolve(gate.check(req("a"), T0), weapons).reason == "classified_weapons"
    gate.set_policy(_policy_with(off="weapons"))  # the kill switch
    assert gate.resolve(gate.check(req("a"), T0), weapons).reason == "screened_clear"
    assert gate.stream_verdict(weapons).stop is None
    gate.apply(command("blocked", 4, 1, gate.policy), T0)
    gate.set_policy(_policy_with("shadow"))
    shadowed = gate.check(req("blocked"), T0)
    assert (shadowed.action, shadowed.reason, shadowed.status) == ("allow", "shadow", 200)
    assert gate.counts[("shadow_block", "level_4")] == 1
    assert gate.peek("blocked", T0).status == 200
    # served in shadow on a stale cache: the fallback the gate would have taken is the request's
    stale = gate.check(req("blocked"), T0 + 10_000 + gate.policy.gate.max_staleness_s + 1)
    assert (stale.reason, stale.fallback) == ("shadow", "open:stale_cache")
    gate.set_policy(_policy_with("refuse"))  # the emergency stop
    stopped = gate.check(req("anyone"), T0)
    assert (stopped.status, stopped.reason) == (403, "policy_refuse")
    assert gate.peek("anyone", T0).status == 403
    # what a gate does when the classifier does not answer for an account under classification
    gate.set_policy(default_policy())
    gate.apply(command("watched", 2, 1, gate.policy), T0)
    gate.apply(command("warned", 1, 1, gate.policy), T0)
    partial = (("weapons", 0.1),)  # only the category the default policy fails closed on
    assert gate.resolve(gate.check(req("watched"), T0), partial).reason == "classified_clear"
    assert gate.resolve(gate.check(req("watched"), T0), None).reason == "fail_closed"
    # one strike may be a false positive: a warned account (L1) is not refused for a slow
    # classifier
    assert gate.resolve(gate.check(req("warned"), T0), None).reason == "fail_open"
    gate.set_policy(_policy_with("fail_closed"))  # every category, every classified rung
    assert gate.resolve(gate.check(req("watched"), T0), partial).reason == "fail_closed"
    assert gate.resolve(gate.check(req("warned"), T0), None).reason == "fail_closed"
    assert gate.resolve(gate.check(req("fresh"), T0), None).reason == "fail_open"  # screening
    gate.set_policy(_policy_with("fail_open"))  # none
    assert gate.resolve(gate.check(req("watched"), T0), None).reason == "fail_open"
