"""The simulation's figures: attackers enforced within 3 harmful completions, benign refusals per
1,000 requests and the highest level a benign account reached."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from safeguards.core.events import EnforcementChanged, Event, RequestObserved
from safeguards.simulations.runner import TraceRecord
from safeguards.simulations.score import score_account, score_personas, summary, table

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def record(persona: str, kind: str, account: str, seq: int, *, harmful: bool,
           outcome: str) -> TraceRecord:
    return TraceRecord(persona, kind, account, "us", seq, float(seq),
                       (T0 + timedelta(seconds=seq)).isoformat(), harmful, False, False, "",
                       200 if outcome == "served" else 403, outcome, None, None, 1.0)


def level_at(account: str, version: int, level: int, seconds: float) -> Event:
    return Event(f"e{version}", account, "us", version, T0 + timedelta(seconds=seconds),
                 "c", "c", "p", EnforcementChanged(level, 0, None, "r", "escalate.points", 3.0, 1))


def test_summary_counts_attackers_in_time_and_benign_refusals() -> None:
    fast = [record("fast", "attacker", "a1", i, harmful=True, outcome="served") for i in range(2)]
    slow = [record("slow", "attacker", "a2", i, harmful=True, outcome="served") for i in range(5)]
    benign = [record("user", "benign", "b1", i, harmful=False,
                     outcome="blocked" if i == 0 else "served") for i in range(500)]
    outcomes = [
        score_account(fast, [level_at("a1", 1, 3, 1.5)]),
        score_account(slow, [level_at("a2", 1, 3, 4.5)]),
        score_account(benign, [level_at("b1", 1, 1, 10)]),
    ]
    s = summary(score_personas(outcomes))
    assert s["attackers_enforced"] == 2 and s["attackers_within_3"] == 1
    assert s["max_harmful_served"] == 5
    assert s["benign_refused_per_1000"] == 2.0 and s["benign_max_level"] == 1
    assert s["benign_throttled"] == 0


def test_an_organisations_level_enforces_its_accounts_and_one_actor_adds_up() -> None:
    """A rotator's accounts never reach L3 themselves; its organisation does, which enforces
    all of them. What it got served before that counts for the one actor, across accounts."""
    accounts = [f"r{i}" for i in range(4)]
    org_history = [level_at("org:rot", 1, 3, 5.5)]
    outcomes = []
    for i, account in enumerate(accounts):
        records = [replace(record("rotator", "attacker", account, 2 * i + j, harmful=True,
                                  outcome="served"), organization="rot") for j in range(2)]
        outcomes.append(score_account(records, [], org_history))
    [persona] = score_personas(outcomes)
    assert persona.enforced and persona.enforced_accounts == 4
    assert persona.max_harmful_served == 6  # sent at 0..5 s, the organisation at L3 at 5.5 s
    assert summary([persona])["attackers_within_3"] == 0
    # the same accounts without an organisation are separate attackers: the worst one counts
    alone = [score_account([replace(r, organization=None) for r in
                            [record("solo", "attacker", a, j, harmful=True, outcome="served")
                             for j in range(2)]], [level_at(a, 1, 3, 1.5)]) for a in accounts]
    assert score_personas(alone)[0].max_harmful_served == 2


def test_what_a_gate_served_before_the_enforcement_reached_it_counts() -> None:
    """Served after the L3 event: plainly (allow, annotate), the gate had not applied it yet and
    it counts; with the safety prompt (intervene, every served request from L2 on), it was served
    under enforcement."""
    actions = ["allow", "allow", "allow", "annotate", "intervene", "intervene"]
    records = [replace(record("drip", "attacker", "d1", i, harmful=True, outcome="served"),
                       action=action) for i, action in enumerate(actions)]
    [outcome] = [score_account(records, [level_at("d1", 1, 3, 1.5)])]
    assert outcome.harmful_served_before_l3 == 4  # two before the event, two after it
    # an older trace without the gate's action: sent before the event, as before
    older = [replace(r, action=None) for r in records]
    assert score_account(older, [level_at("d1", 1, 3, 1.5)]).harmful_served_before_l3 == 2


def observed(account: str, version: int, fallback: str | None) -> Event:
    body = RequestObserved(f"r{version}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow",
                           fallback=fallback)
    return Event(f"o{version}", account, "us", version, T0 + timedelta(seconds=version),
                 "c", "c", "p", body)


def test_requests_served_failing_open_are_counted_apart() -> None:
    """What a gate served for want of a score (its screening missed the deadline, the prompt was
    too long to screen) is told apart from what the model scored and let through; a fail-closed
    fallback and a normal decision are not counted."""
    history = [observed("u1", 1, "open:screen_classifier_timeout"), observed("u1", 2, None),
               observed("u1", 3, "closed:stale_cache"), observed("u1", 4, "open:screen_too_long"),
               level_at("u1", 5, 3, 10)]
    records = [record("drip", "attacker", "u1", i, harmful=True, outcome="served")
               for i in range(4)]
    outcome = score_account(records, history)
    assert outcome.served_unscreened == 2
    other = score_account([replace(r, account="u2") for r in records],
                          [observed("u2", 1, "open:classifier_unavailable")])
    [persona] = score_personas([outcome, other])
    assert persona.served_unscreened == 3
    s = summary([persona])
    assert s["attacker_requests_unscreened"] == 3 and s["benign_requests_unscreened"] == 0
    assert persona.unscreened_causes == (("screen_classifier_timeout", 1),
                                         ("screen_too_long", 1), ("classifier_unavailable", 1))
    lines = table([persona]).splitlines()
    assert "unscreened" in lines[0]
    assert lines[-1] == ("unscreened attacker requests by cause: screen_classifier_timeout 1, "
                         "screen_too_long 1, classifier_unavailable 1")
