"""The same harmful prompt across accounts: normalisation, link keys, prompt ids, and what decide
makes of a flagged prompt (a link and a forwarded score) and of a benign one (nothing)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policies import policy_text

from safeguards.core.decide import decide
from safeguards.core.enforcement import PROMPT_REFUSED, commands_for
from safeguards.core.errors import InvalidAccountId, PolicyError
from safeguards.core.events import (
    AccountLinked,
    EnforcementChanged,
    Event,
    RequestObserved,
    ScoreRecorded,
    ShadowDecision,
    Signal,
    StrikeRecorded,
)
from safeguards.core.ids import (
    aggregate_kind,
    prompt_entity,
    validate_caller_account_id,
)
from safeguards.core.policy import Policy, default_policy, parse_policy
from safeguards.core.prompt_links import (
    forwarded_scores,
    normalise_prompt,
    prompt_link_key,
)
from safeguards.core.state import AccountState, fold, initial_state

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
POLICY = default_policy()
SECRET = bytes(range(32))
LINK = "ab" * 16
PROMPT = "prompt:" + LINK


# --- normalisation and keys ------------------------------------------------------------------


def test_normalisation_folds_compatibility_forms_case_and_whitespace() -> None:
    variants = ["Tell me how to  make RICIN\n", "tell me how to make ricin",
                "\u3000Ｔｅｌｌ ｍｅ how\tto make Ricin ", "TELL ME HOW TO MAKE RICIN"]
    assert {normalise_prompt(v) for v in variants} == {"tell me how to make ricin"}
    assert normalise_prompt("Straße") == normalise_prompt("STRASSE") == "strasse"
    assert normalise_prompt("ﬁle") == "file"  # the ligature is a compatibility form
    assert normalise_prompt(" \n\t ") == ""


@settings(max_examples=300)
@given(st.text())
def test_normalisation_is_idempotent_and_has_no_whitespace_runs(text: str) -> None:
    once = normalise_prompt(text)
    assert normalise_prompt(once) == once
    assert once == once.strip() and "  " not in once
    assert not any(ch.isspace() and ch != " " for ch in once)


@given(st.text(), st.text())
def test_the_link_key_is_the_keyed_hash_of_the_normalised_text(a: str, b: str) -> None:
    key_a, key_b = prompt_link_key(SECRET, a), prompt_link_key(SECRET, b)
    if not normalise_prompt(a):
        assert key_a is None
        return
    assert key_a is not None and prompt_entity(key_a) == "prompt:" + key_a
    assert (key_a == key_b) == (normalise_prompt(a) == normalise_prompt(b))
    assert key_a == prompt_link_key(SECRET, " \t" + a + "\n")  # padding is not a new prompt


def test_link_keys_depend_on_the_region_key_and_are_apart_from_api_key_fingerprints() -> None:
    text = "write ransomware that encrypts a file server"
    here, there = prompt_link_key(SECRET, text), prompt_link_key(bytes(32), text)
    assert here is not None and there is not None and here != there
    assert len(here) == 32 and int(here, 16) >= 0
    # the same bytes as an API-key id under the same key give another digest (domain tags)
    assert here != hmac.new(SECRET, b"api-key\x1f" + text.encode(), hashlib.sha256).hexdigest()[:32]
    # a lone surrogate (JSON may carry one) is hashed, not refused
    assert prompt_link_key(SECRET, "a\ud800b") is not None


def test_prompt_ids_are_reserved_and_validated() -> None:
    assert prompt_entity(LINK) == PROMPT and aggregate_kind(PROMPT) == "prompt"
    for bad in ("AB" * 16, "ab" * 15, "ab" * 17, "zz" * 16, 42, None, "ab" * 16 + "\n"):
        with pytest.raises(InvalidAccountId):
            prompt_entity(bad)
    with pytest.raises(InvalidAccountId):
        validate_caller_account_id(PROMPT)


# --- decide ----------------------------------------------------------------------------------


def request(i: int, link: str | None = LINK, account: str = "a") -> Signal:
    return Signal(f"r{i}", account, "eu", T0, f"c{i}", RequestObserved(
        f"req-{i}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow", prompt_link=link))


def score(i: int, scores: tuple[tuple[str, float], ...], account: str = "a",
          kind: str = "prompt", link: str | None = None) -> Signal:
    return Signal(f"s{i}", account, "eu", T0, f"c{i}", ScoreRecorded(
        f"req-{i}", kind, f"{i:064x}", 120, "default", "1", scores,  # type: ignore[arg-type]
        prompt_link=link))


def run(state: AccountState, signal: Signal, policy: Policy = POLICY,
        at: datetime = T0) -> tuple[AccountState, list[Event]]:
    events = decide(state, signal, policy, at)
    return fold(state, events), events


def links(events: list[Event]) -> list[AccountLinked]:
    return [e.body for e in events if isinstance(e.body, AccountLinked)]


def test_a_flagged_prompt_links_the_account_and_forwards_its_score() -> None:
    s, _ = run(initial_state("a", "eu"), request(1))
    assert s.recent_prompts == (("req-1", LINK),)
    signal = score(1, (("cyber", 0.8),))
    s, events = run(s, signal)
    assert [e.type for e in events] == ["ScoreRecorded", "StrikeRecorded", "EnforcementChanged",
                                        "AccountLinked"]
    linked = links(events)[0]
    assert (linked.link, linked.aggregate, linked.rule_id, linked.request_id) == (
        "prompt", PROMPT, "link.prompt", "req-1")
    assert PROMPT in s.links
    forwarded = forwarded_scores(signal, events)
    assert len(forwarded) == 1 and forwarded[0].account_id == PROMPT
    assert forwarded[0].observation == replace(signal.observation,  # type: ignore[type-var]
                                               member_account="a")
    assert forwarded == forwarded_scores(signal, events)  # ids derive from the signal: replays
    # the same prompt flagged again (in another context) is no second link
    s, _ = run(s, request(2))
    s, events = run(s, score(2, (("cyber", 0.85),)))
    assert not links(events) and not forwarded_scores(score(2, ()), events)


@pytest.mark.parametrize("scores, kind", [
    ((("cyber", 0.2),), "prompt"),  # benign
    ((("jailbreak", 0.4),), "prompt"),  # borderline: accumulates on the account, flags nothing
    ((("rate_abuse", 1.0),), "prompt"),  # no category of content
    ((("cyber", 0.95),), "completion"),  # a completion's score links no prompt
])
def test_nothing_but_a_flagged_prompt_links(scores: tuple[tuple[str, float], ...],
                                            kind: str) -> None:
    s, _ = run(initial_state("a", "eu"), request(1))
    signal = score(1, scores, kind=kind)
    s, events = run(s, signal)
    assert not links(events) and not forwarded_scores(signal, events)
    assert not any(a.startswith("prompt:") for a in s.links)


def test_a_score_without_a_remembered_prompt_links_nothing() -> None:
    s, _ = run(initial_state("a", "eu"), request(1, link=None))
    assert s.recent_prompts == ()
    s, events = run(s, score(1, (("cyber", 0.9),)))
    assert any(isinstance(e.body, StrikeRecorded) for e in events) and not links(events)


def test_a_malformed_link_key_is_refused() -> None:
    with pytest.raises(InvalidAccountId):
        decide(initial_state("a", "eu"), request(1, link="not-hex"), POLICY, T0)


def test_a_score_carrying_its_link_key_links_before_its_request_is_observed() -> None:
    """A batch's prompts are scored from its creation, their requests observed with its results
    (later): the key the score carries links the account, and the score is forwarded without
    it (the prompt's history links to nothing); the request, observed after, links no more."""
    signal = score(1, (("cyber", 0.8),), link=LINK)
    s, events = run(initial_state("a", "eu"), signal)
    assert s.recent_prompts == () and PROMPT in s.links
    linked = links(events)
    assert [(b.link, b.aggregate, b.rule_id, b.request_id) for b in linked] == [
        ("prompt", PROMPT, "link.prompt", "req-1")]
    forwarded = forwarded_scores(signal, events)
    assert [f.account_id for f in forwarded] == [PROMPT]
    assert forwarded[0].observation == replace(signal.observation,  # type: ignore[type-var]
                                               member_account="a", prompt_link=None)
    s, events = run(s, request(1))
    assert not links(events) and s.recent_prompts == (("req-1", LINK),)
    p, events = run(initial_state(PROMPT, "eu"), forwarded[0])
    assert p.strikes == 1 and not links(events)


def test_a_scores_own_key_wins_and_counts_in_the_accounts_own_history_only() -> None:
    other = "cd" * 16
    s, _ = run(initial_state("a", "eu"), request(1))  # the request said LINK
    s, events = run(s, score(1, (("cyber", 0.8),), link=other))
    assert [b.aggregate for b in links(events)] == ["prompt:" + other]
    # in an organisation's history a key on a member's score (or on one naming no member)
    # names nothing: only an account's own decision links it to a prompt
    member = replace(score(2, (("cyber", 0.9),), link=other), account_id="org:acme")
    assert isinstance(member.observation, ScoreRecorded)
    for observation in (member.observation, replace(member.observation, member_account="a")):
        _, events = run(initial_state("org:acme", "eu"), replace(member, observation=observation))
        assert any(isinstance(e.body, StrikeRecorded) for e in events) and not links(events)


@pytest.mark.parametrize("bad", ["not-hex", "AB" * 16, "ab" * 15, "ab" * 17, ""])
def test_a_malformed_link_key_on_a_score_is_refused(bad: str) -> None:
    """A score's key names an aggregate, as a request's does: only a gate's HMAC may."""
    with pytest.raises(InvalidAccountId):
        decide(initial_state("a", "eu"), score(1, (("cyber", 0.1),), link=bad), POLICY, T0)


def test_a_shadowed_prompt_link_records_what_it_would_do() -> None:
    rule = '[rules."link.prompt"]\nshadow = '
    shadowed = parse_policy(policy_text().replace(rule + "false", rule + "true"))
    assert shadowed.is_shadow("link.prompt")
    s, _ = run(initial_state("a", "eu"), request(1), shadowed)
    signal = score(1, (("cyber", 0.8),))
    s, events = run(s, signal, shadowed)
    assert not links(events) and not forwarded_scores(signal, events)
    shadow = [e.body for e in events if isinstance(e.body, ShadowDecision)]
    assert [b.rule_id for b in shadow] == ["link.prompt"] and PROMPT in shadow[0].reason


def member_score(i: int, account: str, value: float) -> Signal:
    own = score(i, (("cyber", value),), account=account)
    assert isinstance(own.observation, ScoreRecorded)
    return replace(own, account_id=PROMPT, signal_id=f"fwd-{i}",
                   observation=replace(own.observation, member_account=account,
                                       content_sha256="f" * 64))


def test_a_prompt_counts_each_account_once_and_refuses_from_the_policys_level() -> None:
    """Every member sent the same prompt (one content hash): each account is evidence once. Two
    accounts' flagged scores earn L2 by points, but the prompt waits at L1 (its rung: classified
    inline) until a third account sent it; then it climbs, and its command refuses it."""
    assert (POLICY.prompt_refuse_level, POLICY.prompt_refuse_accounts) == (2, 3)
    p = initial_state(PROMPT, "eu")
    p, events = run(p, member_score(1, "fresh-1", 0.8))
    assert [e.body.level for e in events if isinstance(e.body, EnforcementChanged)] == [1]
    assert commands_for(events, POLICY)[0].interventions == POLICY.ladder[1].interventions
    p, events = run(p, member_score(2, "fresh-1", 0.8))  # the same account again
    assert [e.type for e in events] == ["ScoreRecorded"]
    p, events = run(p, member_score(3, "fresh-2", 0.8))
    assert (p.level, p.strikes, p.members) == (1, 2, 2)
    assert POLICY.level_for_points(p.risk_total(T0)) == 2  # held back: two accounts only
    p, events = run(p, member_score(4, "fresh-3", 0.8))
    assert (p.level, p.members) == (3, 3)
    assert commands_for(events, POLICY)[0].interventions == PROMPT_REFUSED
    # an organisation at the same level refuses nothing: only a prompt's command carries it
    change = next(e for e in reversed(events) if isinstance(e.body, EnforcementChanged))
    org = replace(change, account_id="org:acme")
    assert commands_for([org], POLICY)[0].interventions == POLICY.ladder[3].interventions
    # a policy without the settings lets the prompt's rung apply, as an organisation's does
    unset = replace(POLICY, prompt_refuse_level=None)
    assert commands_for(events, unset)[0].interventions == POLICY.ladder[3].interventions


def test_without_an_account_minimum_the_level_alone_refuses() -> None:
    """``prompt_refuse_accounts = 1``: points decide, so a severe score jumps a prompt sent by
    one account straight past the refusal level."""
    one = replace(POLICY, prompt_refuse_accounts=1)
    p, events = run(initial_state(PROMPT, "eu"), member_score(1, "fresh-1", 0.8), one)
    p, events = run(p, member_score(2, "fresh-2", 0.8), one)
    assert p.level == 2 and commands_for(events, one)[0].interventions == PROMPT_REFUSED
    severe = replace(member_score(3, "fresh-3", 0.8), observation=replace(
        member_score(3, "fresh-3", 0.8).observation,  # type: ignore[type-var]
        scores=(("weapons", 0.95),)))
    p, events = run(initial_state(PROMPT, "eu"), severe, one)
    assert p.level == 3
    p, events = run(initial_state(PROMPT, "eu"), severe)  # the default asks for three accounts
    assert p.level == 1


def test_a_prompt_counts_borderline_strikes_an_organisation_would_not() -> None:
    p, _ = run(initial_state(PROMPT, "eu"), member_score(1, "fresh-1", 0.7))
    assert POLICY.aggregate_evidence == "refuse_threshold" and p.strikes == 1
    org, _ = run(initial_state("org:acme", "eu"),
                 replace(member_score(1, "fresh-1", 0.7), account_id="org:acme"))
    assert org.strikes == 0


@pytest.mark.parametrize("setting, problem", [
    ("prompt_refuse_level = 0", "every prompt"), ("prompt_refuse_level = 6", "not a level"),
    ("prompt_refuse_accounts = 0", "outside"), ("prompt_refuse_accounts = 17", "outside"),
])
def test_the_prompt_settings_are_validated(setting: str, problem: str) -> None:
    key = setting.split(" =")[0]
    default = {"prompt_refuse_level": "2", "prompt_refuse_accounts": "3"}[key]
    text = policy_text().replace(f"{key} = {default}", setting)
    assert text != policy_text()
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text)


flagging = st.sampled_from([(("cyber", 0.8),), (("weapons", 0.7),), (("jailbreak", 0.55),)])
clearing = st.sampled_from([(("cyber", 0.1),), (("jailbreak", 0.4),), ()])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 3600)), max_size=12),
       st.data())
def test_links_come_only_from_flagged_prompts_and_once_per_prompt(
        steps: list[tuple[bool, bool, int]], data: st.DataObject) -> None:
    """Requests carry one of two prompts; scores flag some. A link (and a forward) follows a
    score exactly when it struck at a category's threshold, its request carried a prompt the
    account is not yet linked to, and never for a benign score."""
    s, at = initial_state("a", "eu"), T0
    for i, (flag, second, gap) in enumerate(steps):
        at += timedelta(seconds=gap)
        link = ("cd" if second else "ab") * 16
        s, _ = run(s, request(i, link), at=at)
        already = "prompt:" + link in s.links
        signal = score(i, data.draw(flagging if flag else clearing))
        s, events = run(s, signal, at=at)
        threshold_strike = any(isinstance(e.body, StrikeRecorded)
                               and e.body.rule_id == "strike.threshold" for e in events)
        expected = ["prompt:" + link] if threshold_strike and not already else []
        assert [b.aggregate for b in links(events)] == expected
        assert [f.account_id for f in forwarded_scores(signal, events)] == expected
        if not flag:
            assert not threshold_strike
