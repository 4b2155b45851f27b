"""GCRA properties of the gate, for any arrival pattern hypothesis can think of."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import default_policy

T0 = 1_800_000_000.0
POLICY = default_policy()


def gate_at_level(level: int) -> Gate:
    gate = Gate(POLICY)
    gate.touch(T0)
    tier = POLICY.rate_tiers[level]
    gate.apply(EnforcementCommand(
        command_id="c", account_id="a", region="eu", level=level,
        requests_per_minute=tier.requests_per_minute, tokens_per_minute=tier.tokens_per_minute,
        interventions=(), expires_at=None, version=1, policy_version=POLICY.version,
        reason="t", issued_at=datetime.fromtimestamp(T0, UTC)))
    return gate


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1,
                     max_size=200),
       level=st.sampled_from([0, 2, 3]))
def test_no_window_admits_more_than_rate_plus_burst(gaps: list[float], level: int) -> None:
    gate = gate_at_level(level)
    gate.touch(T0 + 10_000)  # staleness is not what this test is about
    rpm = POLICY.rate_tiers[level].requests_per_minute
    now = T0
    allowed: list[float] = []
    request = GateRequest("a", "r")
    for gap in gaps:
        now += gap
        if gate.check(request, now).status == 200:
            allowed.append(now)
        else:
            assert gate.check(request, now).retry_after_s > 0
    # GCRA bound: any interval of length t admits at most t/T + tau/T + 1 requests.
    interval = 60.0 / rpm
    for i, start in enumerate(allowed):
        inside = [t for t in allowed[i:] if t - start <= 60.0]
        assert len(inside) <= 60.0 / interval + 60.0 / interval + 1


@settings(max_examples=100, deadline=None)
@given(level=st.sampled_from([0, 2, 3]), n=st.integers(min_value=1, max_value=300),
       slack=st.floats(min_value=1.0, max_value=3.0))
def test_a_client_within_its_rate_is_never_throttled(level: int, n: int, slack: float) -> None:
    gate = gate_at_level(level)
    interval = 60.0 / POLICY.rate_tiers[level].requests_per_minute
    request = GateRequest("a", "r")
    for i in range(n):
        now = T0 + i * interval * slack
        gate.touch(now)
        assert gate.check(request, now).status == 200
