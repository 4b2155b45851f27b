"""``decide(state, signal, policy, now) -> list[Event]``: what the policy makes of one signal.

Pure: the same state, signal, policy and ``now`` always give the same events, ids included
(they are derived from the signal id). ``decide`` folds its own events as it goes, so the rules
later in a decision see the observation and strikes recorded earlier in it.

People before severe sanctions: escalation on its own stops at the policy's
``automatic_max_level``. Past it, the account waits there and a ``ReviewRequested`` puts it in
the operators' queue, unless a severe category has high-confidence evidence from enough distinct
requests, which takes it to L4 (never L5) under ``escalate.severe_evidence``. Operators set any
level directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from safeguards.core.errors import InvalidInput, PolicyError
from safeguards.core.events import (
    AccountLinked,
    AggregateEnforced,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    EventBody,
    OperatorActionTaken,
    PolicyChanged,
    PolicyProposed,
    PolicyRejected,
    RequestObserved,
    ReviewRequested,
    ScoreRecorded,
    Scores,
    ShadowDecision,
    Signal,
    StrikeRecorded,
)
from safeguards.core.ids import (
    API_KEY_PREFIX,
    ORGANIZATION_PREFIX,
    PROMPT_PREFIX,
    aggregate_kind,
    derive_id,
    policy_entity,
    prompt_entity,
)
from safeguards.core.linked_accounts import episode_change, linked_start
from safeguards.core.operators import APPROVAL_WINDOW_S, needs_second_operator
from safeguards.core.policy import THROTTLE_CATEGORY, Policy, parse_policy
from safeguards.core.prompt_links import PROMPT_LINK_RULE, scored_prompt_link
from safeguards.core.state import AccountState, evidence_key, evolve

# The highest level evidence may take an account to without a person: L4 suspends pending review;
# L5 (terminated) always takes an operator.
SEVERE_EVIDENCE_MAX_LEVEL = 4


@dataclass(slots=True)
class _Decision:
    """Accumulates the events of one decision, folding each into the running state."""

    state: AccountState
    signal: Signal
    policy: Policy
    now: datetime
    events: list[Event]
    ids: bool = True  # derive event ids (a backtest compares trajectories and needs none)

    def emit(self, body: EventBody, *, decided: bool) -> Event:
        version = self.state.version + 1
        event = Event(
            event_id=derive_id(self.signal.signal_id, str(len(self.events))) if self.ids else "",
            account_id=self.state.account_id,
            region=self.state.region,
            version=version,
            occurred_at=self.now,
            causation_id=self.signal.signal_id,
            correlation_id=self.signal.correlation_id,
            policy_version=self.policy.version if decided else None,
            body=body,
        )
        self.state = evolve(self.state, event)
        self.events.append(event)
        return event

    def change_level(self, level: int, rule_id: str, reason: str, caused_by: int,
                     expires_at: datetime | None = None, *, explicit_expiry: bool = False) -> None:
        previous = self.state.level
        total = round(self.state.risk_total(self.now), 6)
        if self.policy.is_shadow(rule_id):
            self.emit(ShadowDecision(rule_id, level, previous, reason, caused_by), decided=True)
            return
        if not explicit_expiry:
            duration = self.policy.ladder[level].duration_s
            expires_at = self.now + timedelta(seconds=duration) if duration and level else None
        self.emit(
            EnforcementChanged(level, previous, expires_at, reason, rule_id, total, caused_by),
            decided=True,
        )


def decide(state: AccountState, signal: Signal, policy: Policy, now: datetime) -> list[Event]:
    return decide_and_fold(state, signal, policy, now)[0]


def decide_and_fold(state: AccountState, signal: Signal, policy: Policy, now: datetime, *,
                    ids: bool = True) -> tuple[list[Event], AccountState]:
    """``decide`` plus the state its events fold to, which it computes anyway: callers that need
    both (actors, backtests) save folding every event a second time. ``ids=False`` leaves event
    ids empty (for a backtest, whose events are compared, never stored)."""
    d = _Decision(state, signal, policy, now, [], ids)
    _decide(d, signal, policy)
    episode = episode_change(d.state, policy, d.state.version)
    if episode is not None:  # an aggregate's enforcement starts or stops reaching its members
        d.emit(episode, decided=True)
    return d.events, d.state


def _decide(d: _Decision, signal: Signal, policy: Policy) -> None:
    _expire(d)
    obs = signal.observation
    if obs is None:
        return
    # Escalation needs evidence from distinct requests: content scored again (a retry, a replayed
    # prompt) is recorded, but it is the same evidence and strikes no second time.
    repeated = (isinstance(obs, ScoreRecorded)
                and evidence_key(d.state.account_id, obs) in d.state.recent_content)
    if (isinstance(obs, OperatorActionTaken) and obs.action in ("set_level", "clear")
            and needs_second_operator(obs, d.state.level, set_level=policy.two_person_set_level,
                                      lower_from=policy.two_person_lower_from)):
        # Recorded as a request in place of the action: it changes nothing until approved.
        action: Literal["set_level", "clear"] = "clear" if obs.action == "clear" else "set_level"
        target = _on_ladder(d, obs.level or 0) if action == "set_level" else 0
        d.emit(ApprovalRequested(obs.operator, action, target, obs.expires_at, obs.reason),
               decided=True)
        return
    if isinstance(obs, RequestObserved | ScoreRecorded) and obs.prompt_link is not None:
        prompt_entity(obs.prompt_link)  # InvalidAccountId: not a link key the gates make
    recorded = d.emit(obs, decided=False)
    if isinstance(obs, ScoreRecorded) and not obs.shadow and not repeated:
        flagged = _strikes(d, obs.scores, obs.request_id, obs.model_name, obs.model_version,
                           recorded.version)
        if flagged and obs.content_kind == "prompt":
            _link_prompt(d, obs, recorded.version)
    elif isinstance(obs, RequestObserved):
        if obs.organization_id is not None or obs.api_key_fingerprint is not None:
            _link(d, obs, recorded.version)
        if obs.action == "throttle" and policy.category(THROTTLE_CATEGORY) is not None:
            _strikes(d, ((THROTTLE_CATEGORY, 1.0),), obs.request_id, "inline-gate", "gcra",
                     recorded.version)
    elif isinstance(obs, OperatorActionTaken):
        if obs.action == "approve":
            _approve(d, obs, recorded.version)
        else:
            _operator(d, obs, recorded.version)
    elif isinstance(obs, PolicyProposed):
        _propose_policy(d, obs, recorded.version)
    elif isinstance(obs, AggregateEnforced):
        start = linked_start(d.state, obs, policy)
        if start is not None:
            d.change_level(*start, recorded.version)
    elif isinstance(obs, AppealResolved) and obs.outcome == "overturned":
        _overturn(d, obs, recorded.version)


def _link(d: _Decision, obs: RequestObserved, caused_by: int) -> None:
    """The first request that names an aggregate (organisation, API key) links the account to
    it: from then on its history records where the account's scores also count."""
    named: tuple[tuple[Literal["organization", "api_key"], str | None], ...] = (
        ("organization", obs.organization_id and ORGANIZATION_PREFIX + obs.organization_id),
        ("api_key", obs.api_key_fingerprint and API_KEY_PREFIX + obs.api_key_fingerprint))
    for link, aggregate in named:
        if aggregate and aggregate not in d.state.links:
            d.emit(AccountLinked(link, aggregate, "link.identity", obs.request_id, caused_by),
                   decided=True)


def _link_prompt(d: _Decision, score: ScoreRecorded, caused_by: int) -> None:
    """A prompt the classifier flagged (a strike at its category's threshold) links the account
    to the prompt's own history (``prompt_links.scored_prompt_link``), once: the actor forwards
    the score there (``forwarded_scores``), where every account that sent it counts once."""
    request_id, link = score.request_id, scored_prompt_link(d.state, score)
    if link is None or PROMPT_PREFIX + link in d.state.links:
        return
    aggregate = PROMPT_PREFIX + link
    if d.policy.is_shadow(PROMPT_LINK_RULE):
        d.emit(ShadowDecision(PROMPT_LINK_RULE, d.state.level, d.state.level,
                              f"would link to {aggregate} (request {request_id})", caused_by),
               decided=True)
        return
    d.emit(AccountLinked("prompt", aggregate, PROMPT_LINK_RULE, request_id, caused_by),
           decided=True)


def _propose_policy(d: _Decision, obs: PolicyProposed, caused_by: int) -> None:
    """A valid document proposed in the region's policy history becomes the policy in force;
    anything else is rejected with its problems listed."""
    if d.state.account_id != policy_entity(d.state.region):
        d.emit(PolicyRejected(f"a policy is proposed in {policy_entity(d.state.region)}, not in "
                              "an account's history", caused_by), decided=True)
        return
    try:
        proposed = parse_policy(obs.document, source="proposed policy")
    except PolicyError as exc:
        d.emit(PolicyRejected(str(exc), caused_by), decided=True)
        return
    digest = hashlib.sha256(obs.document.encode("utf-8")).hexdigest()
    d.emit(PolicyChanged(proposed.version, digest, obs.document, obs.operator, obs.reason,
                         caused_by), decided=True)


def _expire(d: _Decision) -> None:
    s = d.state
    if s.level == 0 or s.level_expires_at is None or d.now < s.level_expires_at:
        return
    justified = d.policy.level_for_points(s.risk_total(d.now))
    target = min(justified, s.level - 1)
    d.change_level(target, "expire.level",
                   f"L{s.level} expired; decayed points justify L{justified}", s.level_version)


def _strikes(d: _Decision, scores: Scores, request_id: str, model_name: str,
             model_version: str, caused_by: int) -> bool:
    """Records the strikes the scores earn and escalates on them; True when one of them was at
    its category's threshold (the classifier flagged the content, not a borderline score)."""
    jump_to = 0
    jump_reason = ""
    struck: list[str] = []
    flagged = False
    # An organisation's or API key's history counts high-confidence evidence only (per policy);
    # a prompt's is fed flagged scores only, one per account, and counts them all.
    high_only = (d.policy.aggregate_evidence == "refuse_threshold"
                 and aggregate_kind(d.state.account_id) in ("org", "key"))
    for category, score in scores:
        cat = d.policy.category(category)
        if cat is None or score < cat.accumulate_above or (
                high_only and score < cat.refuse_threshold):
            continue
        if score >= cat.threshold:
            points = cat.weight * score
            rule = "strike.throttled" if category == THROTTLE_CATEGORY else "strike.threshold"
        else:
            points = cat.weight * score * cat.accumulate_factor
            rule = "strike.accumulate"
        if d.state.level:
            points *= 1 + d.policy.recidivism_factor * d.state.level
        if points <= 0:
            continue
        previous = d.state.risk_of(category)
        before = previous.at(d.now) if previous else 0.0
        strike = StrikeRecorded(
            category=category,
            score=score,
            points=round(points, 6),
            total_after=round(before + points, 6),
            half_life_s=cat.half_life_s,
            rule_id=rule,
            request_id=request_id,
            model_name=model_name,
            model_version=model_version,
            caused_by_version=caused_by,
        )
        if d.policy.is_shadow(rule):
            d.emit(ShadowDecision(rule, d.state.level, d.state.level,
                                  f"{category} score {score:.3f} would add {points:.3f} points",
                                  caused_by), decided=True)
            continue
        d.emit(strike, decided=True)
        struck.append(f"{category} {score:.2f}")
        flagged = flagged or rule == "strike.threshold"
        if cat.severe and score >= cat.severe_threshold and cat.jump_to > jump_to:
            jump_to = cat.jump_to
            jump_reason = f"severe {category} score {score:.3f} >= {cat.severe_threshold}"
    if not struck:
        return False
    total = d.state.risk_total(d.now)
    by_points = d.policy.level_for_points(total)
    cap = _prompt_cap(d)
    if cap is not None:
        by_points, jump_to = min(by_points, cap), min(jump_to, cap)
    current = d.state.level
    if jump_to > max(by_points, current):
        _escalate(d, jump_to, "escalate.severe", jump_reason, caused_by)
    elif by_points > current:
        rung = d.policy.ladder[by_points]
        _escalate(d, by_points, "escalate.points",
                  f"{total:.2f} points >= {rung.points} ({', '.join(struck)})", caused_by)
    return flagged


def _prompt_cap(d: _Decision) -> int | None:
    """The highest level a prompt's history may take on this strike: below the policy's
    refusal level until ``prompt_refuse_accounts`` distinct accounts sent the prompt flagged
    (None: no cap; an account's or another aggregate's history, or enough accounts)."""
    p = d.policy
    if (p.prompt_refuse_level is None or aggregate_kind(d.state.account_id) != "prompt"
            or d.state.members >= p.prompt_refuse_accounts):
        return None
    return p.prompt_refuse_level - 1


def _escalate(d: _Decision, target: int, rule_id: str, reason: str, caused_by: int) -> None:
    """Raise the level to ``target``, or as far as the policy lets automation go and ask a person
    for the rest."""
    limit = d.policy.automatic_max_level
    if target <= limit or d.policy.is_shadow(rule_id):  # a shadowed rule records what it would do
        d.change_level(target, rule_id, reason, caused_by)
        return
    level, level_rule, level_reason = limit, rule_id, f"{reason}; L{target} awaits review"
    evidence = _severe_evidence(d) if limit < SEVERE_EVIDENCE_MAX_LEVEL else None
    if evidence is not None:
        lifted = min(target, SEVERE_EVIDENCE_MAX_LEVEL)
        lifted_reason = f"{reason}; {evidence}" + (
            f"; L{target} awaits review" if lifted < target else "")
        if not d.policy.is_shadow("escalate.severe_evidence"):
            level, level_rule, level_reason = lifted, "escalate.severe_evidence", lifted_reason
        elif lifted > d.state.level:  # records what the rule would have done
            d.change_level(lifted, "escalate.severe_evidence", lifted_reason, caused_by)
    if level > d.state.level:
        d.change_level(level, level_rule, level_reason, caused_by)
    if target > d.state.level and target > d.state.review_level:
        why = (f"{rule_id} proposes L{target}: {reason}; automatic enforcement stops at "
               f"L{d.state.level}")
        if d.policy.is_shadow("escalate.review"):
            d.emit(ShadowDecision("escalate.review", target, d.state.level, why, caused_by),
                   decided=True)
        else:
            d.emit(ReviewRequested(target, why, "escalate.review", caused_by), decided=True)


def _severe_evidence(d: _Decision) -> str | None:
    """Why the evidence allows an automatic escalation past the limit, or None if it does not."""
    for cat in d.policy.enabled_categories:
        if not cat.severe:
            continue
        count = d.state.evidence(cat.name, cat.severe_threshold)
        if count >= cat.severe_evidence:
            return (f"{count} distinct requests scored >= {cat.severe_threshold} in severe "
                    f"category {cat.name} (policy asks {cat.severe_evidence})")
    return None


def _on_ladder(d: _Decision, level: int) -> int:
    if not 0 <= level < len(d.policy.ladder):
        raise InvalidInput(f"level {level} is not on the policy's ladder "
                           f"(0 to {len(d.policy.ladder) - 1})")
    return level


def _approve(d: _Decision, obs: OperatorActionTaken, caused_by: int) -> None:
    """A second operator's approval carries out the pending action, if there is one, another
    operator asked for it, it has not lapsed, and the approval names the same target level."""
    pending = d.state.pending_approval
    if (pending is None or pending.operator == obs.operator or obs.level != pending.level
            or (d.now - pending.requested_at).total_seconds() > APPROVAL_WINDOW_S):
        return
    action: Literal["set_level", "clear"] = "clear" if pending.action == "clear" else "set_level"
    d.emit(ApprovalGranted(obs.operator, pending.operator, action, pending.level, obs.reason,
                           caused_by), decided=True)
    _carry_out(d, action, pending.level, pending.expires_at,
               f"operator {pending.operator}, approved by {obs.operator}: {pending.reason}",
               caused_by)


def _overturn(d: _Decision, obs: AppealResolved, caused_by: int) -> None:
    """An overturned appeal sets ``level_after``; where an operator's override to that level
    would take a second operator (lowering a suspended account), it is recorded as a request
    for approval instead, so an appeal is no way around the two-person rule."""
    level = _on_ladder(d, obs.level_after)
    override = OperatorActionTaken(obs.operator, "set_level", level, None, obs.reason)
    if needs_second_operator(override, d.state.level, set_level=d.policy.two_person_set_level,
                             lower_from=d.policy.two_person_lower_from):
        d.emit(ApprovalRequested(obs.operator, "set_level", level, None,
                                 f"appeal {obs.appeal_id} overturned: {obs.reason}"),
               decided=True)
        return
    d.change_level(level, "appeal.overturned",
                   f"appeal {obs.appeal_id} overturned by {obs.operator}", caused_by)


def _operator(d: _Decision, obs: OperatorActionTaken, caused_by: int) -> None:
    if obs.action in ("set_level", "clear") and (obs.action == "clear" or obs.level is not None):
        _carry_out(d, obs.action, obs.level or 0, obs.expires_at,
                   f"operator {obs.operator}: {obs.reason}", caused_by)


def _carry_out(d: _Decision, action: str, level: int, expires_at: datetime | None, reason: str,
               caused_by: int) -> None:
    """An operator's set_level or clear (one operator's, or approved by a second)."""
    if action == "set_level":
        d.change_level(_on_ladder(d, level), "operator.set_level", reason, caused_by, expires_at,
                       explicit_expiry=expires_at is not None)
    elif d.state.level != 0:
        d.change_level(0, "operator.clear", reason, caused_by)
