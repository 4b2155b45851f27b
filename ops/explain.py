"""``ops explain``: the causal chain behind one enforcement change.

signal -> score (model name and version) -> strikes (points, decayed to the decision's time) ->
rule -> policy version; and the aggregates the account was linked to (organisation, API key,
prompt), with, for a change a linked aggregate's enforcement made (rule ``link.enforced``), which
aggregate at which level. Everything comes from the account's stored history: the explanation is
a reading of the record, not a re-computation that could disagree with it.

A history retention truncated starts after its retention base (the state at the last removed
version): its explanations say so and show the risk the base carried to the decision (from strikes
no longer listed), and a change at or before the base is ``BeforeRetentionBase`` (a
``VersionGap``), never explained from what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from safeguards.core.errors import VersionGap
from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    AppealResolved,
    EnforcementChanged,
    Event,
    OperatorActionTaken,
    ScoreRecorded,
    StrikeRecorded,
)
from safeguards.core.state import AccountState


class NotAnEnforcement(LookupError):
    """The version asked for is missing or is not an enforcement change."""


class BeforeRetentionBase(VersionGap):
    """The version asked for is at or before the account's retention base: retention removed
    its events, and only the base's state stands for them."""


def check_after_base(account_id: str, version: int, base: AccountState | None) -> None:
    if base is not None and version <= base.version:
        raise BeforeRetentionBase(
            f"account {account_id!r}: version {version} precedes its kept history; retention "
            f"removed v1..v{base.version} (its retention base at v{base.version} stands for "
            f"them), which starts at v{base.version + 1}")


@dataclass(frozen=True, slots=True)
class StrikeLink:
    strike: Event  # StrikeRecorded
    score: Event | None  # the ScoreRecorded it came from
    decayed_points: float  # what it still weighed when the decision was made


@dataclass(frozen=True, slots=True)
class Explanation:
    account_id: str
    enforcement: Event  # EnforcementChanged
    trigger: Event | None  # the event whose arrival made the decision
    strikes: tuple[StrikeLink, ...]
    links: tuple[Event, ...] = ()  # AccountLinked events before the decision
    erasure: Event | None = None  # the AccountErased that erased this decision's personal data
    base: AccountState | None = None  # the retention base the kept history starts after
    # the base's risk per category decayed to the decision (none once forgiven after the base)
    base_risk: tuple[tuple[str, float], ...] = ()

    @property
    def linked_aggregate(self) -> AggregateEnforced | None:
        """The linked aggregate's enforcement that made the change (rule ``link.enforced``)."""
        body = None if self.trigger is None else self.trigger.body
        return body if isinstance(body, AggregateEnforced) else None

    @property
    def change(self) -> EnforcementChanged:
        body = self.enforcement.body
        assert isinstance(body, EnforcementChanged)
        return body


def _forgives(e: Event) -> bool:
    body = e.body
    return (isinstance(body, OperatorActionTaken) and body.action == "clear") or (
        isinstance(body, AppealResolved) and body.outcome == "overturned")


def explain(history: list[Event], version: int, base: AccountState | None = None) -> Explanation:
    """``history``: the account's kept events (or those the chain needs); ``base``: its
    retention base where retention truncated it."""
    account = history[0].account_id if history else (base.account_id if base else "")
    check_after_base(account, version, base)
    by_version = {e.version: e for e in history}
    target = by_version.get(version)
    if target is None or not isinstance(target.body, EnforcementChanged):
        kind = "missing" if target is None else target.type
        raise NotAnEnforcement(f"version {version} is {kind}, not an EnforcementChanged")
    body = target.body
    trigger = by_version.get(body.caused_by_version)
    strikes: list[StrikeLink] = []
    linked: list[Event] = []
    forgiven = False
    for e in history:
        if e.version >= version:
            break
        if _forgives(e):
            strikes.clear()  # points were forgiven here; earlier strikes no longer count
            forgiven = True
        s = e.body
        if isinstance(s, StrikeRecorded):
            elapsed = (target.occurred_at - e.occurred_at).total_seconds()
            decayed = s.points * 0.5 ** (max(elapsed, 0.0) / s.half_life_s)
            strikes.append(StrikeLink(e, by_version.get(s.caused_by_version), decayed))
        elif isinstance(s, AccountLinked):
            linked.append(e)
    erasure = next((e for e in history if isinstance(e.body, AccountErased)
                    and e.body.erased_through >= version), None)
    carried = () if base is None or forgiven else tuple(
        (r.category, r.at(target.occurred_at)) for r in base.risk)
    return Explanation(target.account_id, target, trigger, tuple(strikes), tuple(linked),
                       erasure, base, carried)


def base_line(base: AccountState) -> str:
    """How an explanation and a report show where a truncated history starts."""
    return (f"history starts at v{base.version + 1}: retention removed v1..v{base.version}; "
            f"its retention base there stands for them (L{base.level}, {base.strikes} strikes)")


def erasure_line(event: Event) -> str:
    """How an explanation, a timeline and a report show an erasure."""
    body = event.body
    assert isinstance(body, AccountErased)
    return (f"personal fields of v1..v{body.erased_through} erased at "
            f"{event.occurred_at.isoformat()} by {body.operator} (data key destroyed; "
            "they read [erased])")


def render(ex: Explanation) -> str:
    e, c = ex.enforcement, ex.change
    lines = [
        f"account {ex.account_id}  version {e.version}  at {e.occurred_at.isoformat()}",
        f"enforcement  L{c.previous_level} -> L{c.level}"
        + (f" until {c.expires_at.isoformat()}" if c.expires_at else " (no expiry)"),
        f"rule         {c.rule_id}",
        f"policy       {e.policy_version}",
        f"reason       {c.reason}",
        f"risk total   {c.risk_total:.3f} points at decision time",
    ]
    if ex.erasure is not None:
        lines.append(f"erased       {erasure_line(ex.erasure)}")
    if ex.base is not None:
        lines.append(f"retention    {base_line(ex.base)}")
        carried = ", ".join(f"{category} {points:.3f}" for category, points in ex.base_risk)
        lines.append("carried      " + (
            f"{carried} pts at decision time, from strikes before the base (not listed)"
            if carried else "none: forgiven after the base" if ex.base.risk else
            "no risk from before the base"))
    if ex.trigger is not None:
        t = ex.trigger
        lines.append(f"triggered by v{t.version} {t.type} (signal {t.causation_id}, "
                     f"correlation {t.correlation_id})")
    enforced = ex.linked_aggregate
    if enforced is not None:
        lines.append(f"linked       {enforced.aggregate} stands at L{enforced.level} (its rule "
                     f"{enforced.rule_id}, its v{enforced.aggregate_version}): accounts linked "
                     "to it start at the policy's linked level")
    if ex.links:
        lines.append("links (aggregates whose scores and enforcement this account shares):")
        for e in ex.links:
            lb = e.body
            assert isinstance(lb, AccountLinked)
            lines.append(f"  v{e.version} {e.occurred_at.isoformat()} {lb.aggregate} "
                         f"({lb.link}, rule {lb.rule_id}, request {lb.request_id})")
    if ex.strikes:
        lines.append("strikes that counted (points decayed to decision time):")
        for link in ex.strikes:
            s = link.strike.body
            assert isinstance(s, StrikeRecorded)
            origin = ""
            if link.score is not None and isinstance(link.score.body, ScoreRecorded):
                score = link.score.body
                origin = (f" <- v{link.score.version} score of {score.content_kind} "
                          f"{score.content_sha256[:12]} ({score.content_chars} chars) by "
                          f"{score.model_name} {score.model_version}, request {score.request_id}")
            lines.append(
                f"  v{link.strike.version} {link.strike.occurred_at.isoformat()} {s.category} "
                f"score {s.score:.3f} -> {s.points:.3f} pts, now {link.decayed_points:.3f}{origin}"
            )
    elif c.rule_id.startswith("operator") or c.rule_id.startswith("appeal"):
        lines.append("no strikes: this change was made by a person; see the reason above")
    elif enforced is not None:
        lines.append("no strikes: a linked aggregate's enforcement set this level")
    return "\n".join(lines)
