"""Linked accounts, per enforcement episode (issue 18): an aggregate cleared and enforced again
tells its members again, a live policy change of the trigger reaches an aggregate with its next
decision, an episode reaches the policy's ``linked_members`` newest members at once and the
older ones as their scores or links return, and the fold keeps at most MAX_MEMBERS members
(``linked_region.Region``, a pure model of a region's histories and inboxes)."""

from __future__ import annotations

import re
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linked_region import ORG, T0, Region, request, set_level
from policies import policy_text

from safeguards.core import codec
from safeguards.core.aggregate_members import MAX_MEMBERS, Membership
from safeguards.core.errors import PolicyError
from safeguards.core.events import AggregateEnforced, LinkedEpisode, ScoreRecorded, Signal
from safeguards.core.policy import Policy, default_policy, parse_policy
from safeguards.core.state import AccountState, fold, initial_state

POLICY = default_policy()


def policy(trigger: int = 2, members: int = 256) -> Policy:
    """The default policy with its linked trigger level and reach changed (a live change)."""
    text = policy_text(version=f"t{trigger}m{members}-")
    text = text.replace("linked_trigger_level = 2", f"linked_trigger_level = {trigger}")
    return parse_policy(text.replace("linked_members = 256", f"linked_members = {members}"))


def told(r: Region) -> list[Signal]:
    return [s for s in r.forwarded if isinstance(s.observation, AggregateEnforced)]


def episodes(r: Region, entity: str = ORG) -> list[tuple[str, int, int, int]]:
    return [(e.body.phase, e.body.trigger_level, e.body.level, e.body.reach)
            for e in r.histories.get(entity, []) if isinstance(e.body, LinkedEpisode)]


def test_the_default_policy_reaches_256_members_and_the_bound_is_the_folds() -> None:
    assert POLICY.linked_members == 256 and MAX_MEMBERS == 1024
    assert policy(members=MAX_MEMBERS).linked_members == MAX_MEMBERS


@pytest.mark.parametrize("value, problem", [
    ("0", "linked_members: 0 is outside [1, 1024]"),
    ("1025", "linked_members: 1025 is outside [1, 1024]"),
    ("true", "expected a number"),
])
def test_linked_members_is_validated(value: str, problem: str) -> None:
    text = policy_text().replace("linked_members = 256", f"linked_members = {value}")
    with pytest.raises(PolicyError, match=re.escape(problem)):
        parse_policy(text)


def test_an_aggregate_cleared_and_enforced_again_tells_its_members_again() -> None:
    r = Region()
    r.send(request("a", 1), request("b", 1))
    r.send(set_level(ORG, 2, 1))
    first = told(r)
    assert sorted(s.account_id for s in first) == ["a", "b"]
    assert episodes(r) == [("opened", 2, 2, 256)]
    r.send(set_level(ORG, 0, 2))  # cleared: the fold ends the episode
    assert r.state(ORG).membership.episode == 0
    r.send(set_level("a", 0, 3))  # an operator clears one member; b stays at L1
    assert (r.level("a"), r.level("b")) == (0, 1)
    r.send(set_level(ORG, 2, 4))  # enforced again: a new episode tells both again
    second = told(r)[len(first):]
    assert sorted(s.account_id for s in second) == ["a", "b"]
    assert not {s.signal_id for s in first} & {s.signal_id for s in second}
    assert episodes(r) == [("opened", 2, 2, 256)] * 2
    assert (r.level("a"), r.level("b")) == (1, 1)
    assert [(before, after) for before, after, _ in r.link_rules("a")] == [(0, 1), (0, 1)]
    assert len(r.link_rules("b")) == 1  # b, still at L1, records the second telling only
    assert [e.type for e in r.histories["b"]].count("AggregateEnforced") == 2
    # a redelivery of either round (the relay publishing the outbox again) is absorbed
    sizes = {m: len(r.histories[m]) for m in ("a", "b", ORG)}
    r.send(*first, *second, set_level(ORG, 2, 4))
    assert {m: len(r.histories[m]) for m in ("a", "b", ORG)} == sizes


def test_a_level_lowered_below_the_trigger_ends_the_episode() -> None:
    r = Region()
    r.send(request("a", 1))
    r.send(set_level(ORG, 3, 1))
    r.send(set_level(ORG, 1, 2))  # below the trigger it opened under
    assert r.state(ORG).membership.episode == 0 and episodes(r) == [("opened", 2, 3, 256)]
    r.send(request("b", 1))  # a member joining now is not told
    assert r.level("b") == 0 and len(told(r)) == 1


def test_a_lowered_trigger_reaches_the_members_with_the_aggregates_next_decision() -> None:
    """The nodes swap the policy they decide by; the aggregate sees no signal of it. Its next
    decision (here a new member's link) opens the episode under the new trigger and tells every
    member, those that joined while the old trigger held included."""
    r = Region(policy(trigger=3))
    r.send(request("a", 1))
    r.send(set_level(ORG, 2, 1), request("b", 1))
    assert (r.level("a"), r.level("b")) == (0, 0) and episodes(r) == []
    r.policy = policy(trigger=2)  # live: ops policy apply -> PolicyChanged -> nodes
    assert (r.level("a"), r.level("b")) == (0, 0)  # nothing until the aggregate decides
    r.send(request("c", 1))
    assert (r.level("a"), r.level("b"), r.level("c")) == (1, 1, 1)
    [opened] = [e for e in r.histories[ORG] if isinstance(e.body, LinkedEpisode)]
    body = opened.body
    assert isinstance(body, LinkedEpisode) and opened.policy_version == r.policy.version
    assert (body.phase, body.trigger_level) == ("opened", 2)
    assert body.caused_by_version == opened.version - 1  # c's MemberLinked


def test_a_raised_trigger_closes_the_episode_and_the_next_lowering_opens_another() -> None:
    r = Region()
    r.send(request("a", 1))
    r.send(set_level(ORG, 2, 1))
    r.policy = policy(trigger=3)
    r.send(request("b", 1))  # the aggregate's next decision closes the episode: b is not told
    assert episodes(r)[-1] == ("closed", 3, 2, 0) and r.level("b") == 0
    assert r.state(ORG).membership.episode == 0
    r.policy = policy(trigger=2)
    r.send(set_level(ORG, 2, 2))  # an operator's action is a decision like any other
    assert episodes(r)[-1] == ("opened", 2, 2, 256) and r.level("b") == 1
    assert [s.account_id for s in told(r)] == ["a", "a", "b"]  # a, already at L1, records it


def test_an_episode_reaches_the_newest_members_and_the_older_ones_as_they_return() -> None:
    r = Region(policy(members=2))
    r.send(request("a", 1), request("b", 1), request("c", 1))
    r.send(set_level(ORG, 2, 1))
    assert [r.level(m) for m in "abc"] == [0, 1, 1]
    assert episodes(r) == [("opened", 2, 2, 2)] and r.state(ORG).membership.untold == 1
    r.send(member_score("a", 1))  # its next score reaches the organisation: moved up, told
    assert r.level("a") == 1
    m = r.state(ORG).membership
    assert (m.accounts, m.untold) == (("b", "c", "a"), 0)
    before = len(told(r))
    r.send(member_score("a", 2))
    assert len(told(r)) == before  # told once per episode


def test_a_policy_reaching_further_opens_the_episode_again() -> None:
    r = Region(policy(members=2))
    r.send(request("a", 1), request("b", 1), request("c", 1), request("d", 1))
    r.send(set_level(ORG, 2, 1))
    assert [r.level(m) for m in "abcd"] == [0, 0, 1, 1]
    r.policy = policy(members=3)  # live: the next decision reaches one member further
    r.send(member_score("d", 1))
    assert [r.level(m) for m in "abcd"] == [0, 1, 1, 1]
    assert episodes(r) == [("opened", 2, 2, 2), ("opened", 2, 2, 3)]
    r.policy = policy(members=1)  # reaching less changes nothing already told
    r.send(member_score("d", 2))
    assert len(episodes(r)) == 2 and r.state(ORG).membership.untold == 1


def member_score(member: str, i: int) -> Signal:
    """A member's (benign) score, as the classifier sends it to the organisation's history."""
    return Signal(f"score-{member}-{i}", ORG, "eu", T0, f"c-{member}-{i}", ScoreRecorded(
        f"r-{member}-{i}", "prompt", f"{i:064x}", 10, "default", "1", (("cyber", 0.1),),
        member_account=member))


def test_the_fold_keeps_the_newest_members_up_to_its_bound() -> None:
    m = Membership()
    for i in range(MAX_MEMBERS + 10):
        m = m.with_member(f"acct-{i}")
    assert len(m.accounts) == MAX_MEMBERS and m.accounts[0] == "acct-10"
    assert "acct-9" not in m and "acct-10" in m
    again = m.with_member("acct-0")  # forgotten: comes back as new
    assert again.accounts[-1] == "acct-0" and "acct-11" in again and "acct-10" not in again
    # an episode that reached the newest 4: the older ones are untold, and eviction counts down
    opened = m.opened(7, 2, 4)
    assert opened.untold == MAX_MEMBERS - 4 and opened.is_untold("acct-10")
    assert opened.with_member("new").untold == MAX_MEMBERS - 5
    moved = opened.with_member("acct-500")
    assert moved.accounts[-1] == "acct-500" and not moved.is_untold("acct-500")
    assert moved.added_since(opened) == ("acct-500",) and moved.untold == MAX_MEMBERS - 5


def test_a_snapshot_keeps_the_members_and_the_episode() -> None:
    state = AccountState(ORG, "eu", version=5, level=2,
                         membership=Membership(("a", "b", "c"), 4, 2, 1))
    decoded = codec.decode_state(codec.encode_state(state))
    assert decoded == state and decoded is not None and "b" in decoded.membership


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("abcdefg", min_size=1, max_size=2), max_size=60),
       st.integers(1, 8), st.integers(1, 8))
def test_membership_agrees_with_a_plain_list(joins: list[str], reach: int, after: int) -> None:
    """Any joins, an episode opened part way: the set index, the order (moved members last), the
    untold prefix and ``added_since`` agree with a list kept the slow way."""
    m, untold = Membership(), 0
    plain: list[str] = []
    for i, member in enumerate(joins):
        if i == after:
            m, untold = m.opened(i + 1, 2, reach), max(0, len(plain) - reach)
        before = m
        if member in plain:
            if plain.index(member) < untold:
                plain.remove(member)
                plain.append(member)
                untold -= 1
        else:
            plain.append(member)
        m = m.with_member(member)
        assert list(m.accounts) == plain and m.untold == untold
        assert all(a in m for a in plain) and "zz" not in m
        added = m.added_since(before)
        assert added == (() if m is before else (member,))


steps = st.lists(st.one_of(
    st.tuples(st.just("link"), st.sampled_from(["a", "b", "c", "d", "e"])),
    st.tuples(st.just("score"), st.sampled_from(["a", "b", "c", "d", "e"])),
    st.tuples(st.just("org"), st.integers(0, 3)),
    st.tuples(st.just("policy"), st.tuples(st.integers(1, 3), st.integers(1, 5))),
    st.tuples(st.just("again"), st.integers(0, 100)),
), max_size=30)


@settings(max_examples=80, deadline=None)
@given(steps)
def test_after_every_aggregate_decision_its_episode_follows_the_policy_in_force(
        plan: list[tuple[str, object]]) -> None:
    """Any order of links, members' scores, operator levels on the organisation, live trigger and
    reach changes and redeliveries: after each decision of the organisation an episode is open
    exactly when it stands at the trigger in force, every member it reached (all but the untold
    prefix) stands at L1 or above, its history folds to its state, and a region fed every signal
    twice ends in the same states."""
    r, twice = Region(), Region()
    sent: list[Signal] = []
    for i, (kind, arg) in enumerate(plan):
        if kind == "policy":
            trigger, members = cast(tuple[int, int], arg)
            r.policy = twice.policy = policy(trigger, members)
            continue
        if kind == "link":
            signal = request(str(arg), i)
        elif kind == "score":  # a member's score reaching the organisation (an untold one moves)
            signal = member_score(str(arg), i)
        elif kind == "org":
            signal = set_level(ORG, int(arg), i)  # type: ignore[call-overload]
        elif sent:
            signal = sent[int(arg) % len(sent)]  # type: ignore[call-overload]
        else:
            continue
        sent.append(signal)
        decided = len(r.histories.get(ORG, []))
        r.send(signal)
        twice.send(signal, signal)
        org = r.state(ORG)
        assert fold(initial_state(ORG, "eu"), r.histories.get(ORG, [])) == org
        if len(r.histories.get(ORG, [])) == decided:
            continue  # the organisation did not decide (a member's redelivery, absorbed)
        m = org.membership
        assert bool(m.episode) == (org.level >= r.policy.linked_trigger_level)
        if m.episode:
            assert m.episode_trigger == r.policy.linked_trigger_level
            assert all(r.level(a) >= 1 for a in m.accounts[m.untold:])
            assert not m.untold or len(m.accounts) - m.untold >= r.policy.linked_members
    assert r.states == twice.states
