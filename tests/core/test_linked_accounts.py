"""Linked accounts (issue 18): an aggregate enforced at the policy's trigger level starts every
account linked to it, and each that links to it later, at the policy's linked level. The
histories talk through forwarded signals, as the actors' outboxes carry them
(``linked_region.Region``, a pure model of a region)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linked_region import ORG, T0, Region, request, set_level
from policies import policy_text

from safeguards.core.decide import decide_and_fold
from safeguards.core.errors import PolicyError
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    MemberLinked,
    RequestObserved,
    ScoreRecorded,
    ShadowDecision,
    Signal,
)
from safeguards.core.linked_accounts import (
    LINK_ENFORCED_RULE,
    enforced_members,
    forwarded_signals,
    linked_start,
)
from safeguards.core.policy import default_policy, parse_policy
from safeguards.core.state import AccountState, initial_state

from golden_events import GOLDEN
from make_golden import POLICY_FILE

POLICY = default_policy()
KEY = "key:" + "ab" * 16


def member_score(i: int, member: str, value: float, aggregate: str = ORG) -> Signal:
    """A member's score as the classifier sends it to the aggregate's history."""
    return Signal(f"agg-score-{i}", aggregate, "eu", T0, f"c{i}", ScoreRecorded(
        f"r{i}", "prompt", f"{i:064x}", 120, "default", "1", (("cyber", value),),
        member_account=member))


def test_the_default_policy_starts_linked_accounts_at_l1_from_an_aggregate_at_l2() -> None:
    assert (POLICY.linked_start_level, POLICY.linked_trigger_level) == (1, 2)
    assert not POLICY.is_shadow(LINK_ENFORCED_RULE)
    old = parse_policy((GOLDEN / POLICY_FILE).read_text())
    assert old.linked_start_level == 0  # policies written before the setting start no one


@pytest.mark.parametrize("setting, problem", [
    ("linked_start_level = 4", "linked_start_level: 4 is outside [0, 3]"),
    ("linked_start_level = -1", "linked_start_level: -1 is outside"),
    ("linked_start_level = true", "expected a number"),
    ("linked_trigger_level = 0", "linked_trigger_level: 0 is not a level 1 to 5"),
    ("linked_trigger_level = 6", "linked_trigger_level: 6 is not a level"),
])
def test_linked_levels_are_validated(setting: str, problem: str) -> None:
    key = setting.split(" = ")[0]
    text = policy_text()
    start = text.index(key + " = ")
    text = text[:start] + setting + text[text.index("\n", start):]
    with pytest.raises(PolicyError, match=re.escape(problem)):
        parse_policy(text)


def test_links_never_start_an_account_past_what_automation_may_reach() -> None:
    text = policy_text().replace("automatic_max_level = 3", "automatic_max_level = 1")
    text = text.replace("linked_start_level = 1", "linked_start_level = 2")
    with pytest.raises(PolicyError, match=r"linked_start_level: 2 is outside \[0, 1\]"):
        parse_policy(text)


def test_an_account_linked_before_its_organisation_is_enforced_is_raised_when_it_is() -> None:
    r = Region()
    r.send(request("a", 1), request("b", 1))
    assert r.state(ORG).member_accounts == ("a", "b")
    assert [e.body for e in r.histories[ORG]] == [
        MemberLinked("a", "organization", "r-a-1"), MemberLinked("b", "organization", "r-b-1")]
    assert r.level("a") == r.level("b") == 0
    r.send(set_level(ORG, 2))
    assert r.level(ORG) == 2 and r.level("a") == r.level("b") == 1
    for account in ("a", "b"):
        [(before, after, reason)] = r.link_rules(account)
        assert (before, after) == (0, 1)
        assert ORG in reason and "L2" in reason and "operator.set_level" in reason
        told = [e.body for e in r.histories[account] if isinstance(e.body, AggregateEnforced)]
        assert told == [AggregateEnforced(ORG, 2, "operator.set_level", 4)]


def test_an_account_that_links_to_an_enforced_organisation_starts_at_the_linked_level() -> None:
    r = Region()
    r.send(set_level(ORG, 3))
    r.send(request("late", 1))  # links -> MemberLinked -> AggregateEnforced -> link.enforced
    assert r.level("late") == 1
    types = [e.type for e in r.histories["late"]]
    assert types == ["RequestObserved", "AccountLinked", "AggregateEnforced",
                     "EnforcementChanged"]
    assert r.histories["late"][-1].body.caused_by_version == 3  # type: ignore[union-attr]
    # its later requests naming the organisation link nothing again and tell nobody
    sent = len(r.forwarded)
    r.send(request("late", 2))
    assert len(r.forwarded) == sent and r.level("late") == 1


def test_a_member_known_from_its_scores_is_told_too_and_api_keys_work_alike() -> None:
    r = Region()
    r.send(member_score(1, "scored", 0.95, KEY))  # the classifier's copy, no request seen yet
    r.send(set_level(KEY, 2))
    assert r.level("scored") == 1
    assert r.link_rules("scored")[0][2].startswith(f"linked to {KEY}")


def test_an_unenforced_aggregate_changes_nothing() -> None:
    r = Region()
    r.send(request("a", 1), set_level(ORG, 1), request("b", 1))
    assert r.level(ORG) == 1
    assert r.level("a") == r.level("b") == 0
    assert not [s for s in r.forwarded if isinstance(s.observation, AggregateEnforced)]


def test_links_switched_off_tell_nobody() -> None:
    off = parse_policy(policy_text().replace("linked_start_level = 1", "linked_start_level = 0"))
    r = Region(off)
    r.send(request("a", 1), set_level(ORG, 3), request("b", 1))
    assert r.level("a") == r.level("b") == 0
    assert not [s for s in r.forwarded if isinstance(s.observation, AggregateEnforced)]


def test_a_link_never_lowers_a_level_and_never_raises_an_aggregate() -> None:
    told = AggregateEnforced(ORG, 3, "escalate.points", 9)
    high = AccountState("a", "eu", version=4, level=2)
    assert linked_start(high, told, POLICY) is None
    assert linked_start(AccountState("a", "eu", level=1), told, POLICY) is None
    assert linked_start(initial_state(KEY, "eu"), told, POLICY) is None
    assert linked_start(initial_state("a", "eu"), AggregateEnforced(ORG, 1, "x", 2),
                        POLICY) is None  # below the trigger (an older policy's message)
    start = linked_start(initial_state("a", "eu"), told, POLICY)
    assert start is not None and start[:2] == (1, LINK_ENFORCED_RULE)
    r = Region()
    r.send(set_level("a", 3), request("a", 1), set_level(ORG, 2))
    assert r.level("a") == 3 and r.link_rules("a") == []
    assert [e.type for e in r.histories["a"]][-1] == "AggregateEnforced"  # recorded, no change


def test_the_linked_level_is_at_most_l3_even_if_the_aggregate_is_suspended() -> None:
    three = parse_policy(policy_text().replace("linked_start_level = 1", "linked_start_level = 3"))
    r = Region(three)
    r.send(request("a", 1), set_level(ORG, 4))
    assert r.level(ORG) == 4 and r.level("a") == 3


def test_a_shadowed_link_rule_records_what_it_would_do() -> None:
    rule = '[rules."link.enforced"]\nshadow = '
    shadowed = parse_policy(policy_text().replace(rule + "false", rule + "true"))
    r = Region(shadowed)
    r.send(request("a", 1), set_level(ORG, 2))
    assert r.level("a") == 0
    shadow = [e.body for e in r.histories["a"] if isinstance(e.body, ShadowDecision)]
    assert [(b.rule_id, b.would_level) for b in shadow] == [(LINK_ENFORCED_RULE, 1)]


def test_members_are_told_once_per_enforcement_and_replays_forward_the_same_signals() -> None:
    r = Region()
    r.send(request("a", 1), request("b", 1))
    before = r.state(ORG)
    signal = set_level(ORG, 2)
    events, after = decide_and_fold(before, signal, POLICY, T0)
    first = forwarded_signals(before, signal, events, after, POLICY)
    assert first == forwarded_signals(before, signal, events, after, POLICY)
    assert sorted(s.account_id for s in first) == ["a", "b"]
    r.send(signal, signal)  # a redelivery: the inbox absorbs it
    r.send(*first)  # the relay publishing the outbox again: the members' inboxes absorb it
    assert [len(r.link_rules(a)) for a in ("a", "b")] == [1, 1]
    # raised further (L2 -> L3) it crosses nothing: members were told already
    r.send(set_level(ORG, 3, 1))
    assert len([s for s in r.forwarded if isinstance(s.observation, AggregateEnforced)]) == 2


def test_a_prompt_refused_to_everyone_starts_the_accounts_that_sent_it() -> None:
    """Three accounts sent the same flagged prompt: the prompt's history refuses it (L2), and
    under a policy that starts linked accounts at L2 each sender starts there."""
    two = parse_policy(policy_text().replace("linked_start_level = 1", "linked_start_level = 2"))
    r = Region(two)
    link = "cd" * 16
    for i, account in enumerate(("p1", "p2", "p3")):
        r.send(Signal(f"req-{i}", account, "eu", T0, f"c{i}", RequestObserved(
            f"r{i}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow", prompt_link=link)))
        r.send(Signal(f"s-{i}", account, "eu", T0, f"c{i}", ScoreRecorded(
            f"r{i}", "prompt", f"{i:064x}", 120, "default", "1", (("cyber", 0.8),))))
    prompt = "prompt:" + link
    assert r.level(prompt) >= 2 and r.state(prompt).member_accounts == ("p1", "p2", "p3")
    assert [r.level(a) for a in ("p1", "p2", "p3")] == [2, 2, 2]
    assert all(any(e.body.aggregate == prompt for e in r.histories[a]
                   if isinstance(e.body, AccountLinked)) for a in ("p1", "p2", "p3"))


def test_members_that_are_no_accounts_are_never_told() -> None:
    r = Region()
    r.send(member_score(1, "org:other", 0.95), member_score(2, "bad id", 0.95))
    before = r.state(ORG)
    signal = set_level(ORG, 2)
    events, after = decide_and_fold(before, signal, POLICY, T0)
    assert after.member_accounts == ("org:other", "bad id")
    assert enforced_members(before, signal, events, after, POLICY) == []


steps = st.lists(st.one_of(
    st.tuples(st.just("link"), st.sampled_from(["a", "b", "c", "d"])),
    st.tuples(st.just("org"), st.integers(0, 3)),
    st.tuples(st.just("again"), st.integers(0, 100)),
), max_size=25)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_whenever_the_organisation_stands_at_the_trigger_its_members_stand_linked(
        plan: list[tuple[str, object]]) -> None:
    """Any order of links, operator levels on the organisation and redeliveries: afterwards every
    member of an organisation at L2 or above is at L1 or above; links only ever raised a level,
    to L1; and a second region fed the same signals twice over ends in the same states."""
    r, twice = Region(), Region()
    sent: list[Signal] = []
    for i, (kind, arg) in enumerate(plan):
        if kind == "link":
            signal = request(str(arg), i)
        elif kind == "org":
            signal = set_level(ORG, int(arg), i)  # type: ignore[call-overload]
        elif sent:
            signal = sent[int(arg) % len(sent)]  # type: ignore[call-overload]
        else:
            continue
        sent.append(signal)
        r.send(signal)
        twice.send(signal, signal)
        if r.level(ORG) >= POLICY.linked_trigger_level:
            assert all(r.level(m) >= 1 for m in r.state(ORG).member_accounts)
    assert r.states == twice.states
    for account in ("a", "b", "c", "d"):
        assert all((before, after) == (0, 1) for before, after, _ in r.link_rules(account))
