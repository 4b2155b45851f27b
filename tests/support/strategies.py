"""Hypothesis strategies for the core's events, signals and commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    AppealFiled,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    EventBody,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    PolicyChanged,
    PolicyProposed,
    PolicyRejected,
    RequestObserved,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    ShadowDecision,
    Signal,
    StrikeRecorded,
)

CATEGORIES = ("jailbreak", "cyber", "weapons", "violence", "self_harm", "hate", "sexual",
              "illicit", "unknown_category")

account_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
regions = st.sampled_from(("us", "eu", "ap1"))
texts = st.text(max_size=40)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
optional_times = st.none() | times
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
levels = st.integers(min_value=0, max_value=5)
sha = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
scores = st.lists(st.tuples(st.sampled_from(CATEGORIES), unit), max_size=5).map(tuple)
small = st.integers(min_value=0, max_value=10**9)
keyed_hashes = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)  # regional HMACs

request_observed = st.builds(RequestObserved, request_id=texts, model=texts, surface=texts,
                             input_tokens=small, output_tokens=small, prompt_chars=small,
                             prompt_sha256=sha, streamed=st.booleans(), action=texts,
                             organization_id=st.none() | account_ids,
                             project_id=st.none() | account_ids,
                             api_key_fingerprint=st.none() | keyed_hashes,
                             prompt_link=st.none() | keyed_hashes,
                             fallback=st.none() | texts)
score_recorded = st.builds(ScoreRecorded, request_id=texts,
                           content_kind=st.sampled_from(("prompt", "completion")),
                           content_sha256=sha, content_chars=small, model_name=texts,
                           model_version=texts, scores=scores, shadow=st.booleans(),
                           member_account=st.none() | account_ids,
                           prompt_link=st.none() | keyed_hashes)
operator_action = st.builds(OperatorActionTaken, operator=texts,
                            action=st.sampled_from(("set_level", "clear", "note", "approve",
                                                    "reject")),
                            level=st.none() | levels, expires_at=optional_times, reason=texts)
appeal_filed = st.builds(AppealFiled, appeal_id=texts, filed_by=texts, reason=texts)
appeal_resolved = st.builds(AppealResolved, appeal_id=texts, operator=texts,
                            outcome=st.sampled_from(("upheld", "overturned")),
                            level_after=levels, reason=texts)
review_claimed = st.builds(ReviewClaimed, operator=texts, reason=texts)
policy_proposed = st.builds(PolicyProposed, operator=texts, reason=texts, document=texts)
link_kinds = st.sampled_from(("organization", "api_key", "prompt"))
member_linked = st.builds(MemberLinked, member_account=account_ids, link=link_kinds,
                          request_id=texts)
aggregate_enforced = st.builds(AggregateEnforced, aggregate=account_ids, level=levels,
                               rule_id=texts, aggregate_version=small)
observations = (request_observed | score_recorded | operator_action | review_claimed
                | appeal_filed | appeal_resolved | policy_proposed | member_linked
                | aggregate_enforced)

decisions = (
    st.builds(StrikeRecorded, category=st.sampled_from(CATEGORIES), score=unit, points=unit,
              total_after=unit, half_life_s=st.floats(1, 1e7), rule_id=texts, request_id=texts,
              model_name=texts, model_version=texts, caused_by_version=small)
    | st.builds(EnforcementChanged, level=levels, previous_level=levels,
                expires_at=optional_times, reason=texts, rule_id=texts, risk_total=unit,
                caused_by_version=small)
    | st.builds(ShadowDecision, rule_id=texts, would_level=levels, current_level=levels,
                reason=texts, caused_by_version=small)
    | st.builds(ReviewRequested, proposed_level=levels, reason=texts, rule_id=texts,
                caused_by_version=small)
    | st.builds(PolicyChanged, policy_version=texts, sha256=sha, document=texts,
                operator=texts, reason=texts, caused_by_version=small)
    | st.builds(PolicyRejected, problems=texts, caused_by_version=small)
    | st.builds(ApprovalRequested, operator=texts,
                action=st.sampled_from(("set_level", "clear")), level=levels,
                expires_at=optional_times, reason=texts)
    | st.builds(ApprovalGranted, approver=texts, operator=texts,
                action=st.sampled_from(("set_level", "clear")), level=levels, reason=texts,
                caused_by_version=small)
    | st.builds(AccountLinked, link=link_kinds,
                aggregate=account_ids, rule_id=texts, request_id=texts, caused_by_version=small)
    | st.builds(AccountErased, operator=texts, erased_through=small, keys_destroyed=small)
    | st.builds(LinkedEpisode, phase=st.sampled_from(("opened", "closed")), trigger_level=levels,
                level=levels, reach=small, caused_by_version=small)
)
bodies: st.SearchStrategy[EventBody] = observations | decisions

events = st.builds(Event, event_id=texts, account_id=account_ids, region=regions,
                   version=st.integers(min_value=1, max_value=10**9), occurred_at=times,
                   causation_id=texts, correlation_id=texts, policy_version=st.none() | texts,
                   body=bodies)

# valid Unicode: a lone surrogate cannot be encoded (test_codec checks its typed error)
envelope_ids = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                       max_size=40)
signals = st.builds(Signal, signal_id=envelope_ids.filter(bool), account_id=account_ids,
                    region=regions, occurred_at=times, correlation_id=envelope_ids,
                    observation=st.none() | observations)

commands = st.builds(EnforcementCommand, command_id=texts, account_id=account_ids, region=regions,
                     level=levels, requests_per_minute=small, tokens_per_minute=small,
                     interventions=st.lists(texts, max_size=4).map(tuple),
                     expires_at=optional_times, version=small, policy_version=texts,
                     reason=texts, issued_at=times)


def score_signal(i: int, account: str, at: datetime, scores: tuple[tuple[str, float], ...],
                 region: str = "eu") -> Signal:
    return Signal(f"sig-{i}", account, region, at, f"corr-{i}",
                  ScoreRecorded(f"req-{i}", "prompt", f"{i:064x}", 120, "default", "1", scores))


def step(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)
