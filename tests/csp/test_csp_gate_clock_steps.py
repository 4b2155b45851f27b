"""The inline gate on a host whose wall clock steps an hour: enforcement, throttles and staleness
keep to the time that passed (``gate_time``), not to the step."""

from __future__ import annotations

from datetime import UTC, datetime

from safeguards.adapters.csp.decision import BLOCK_ACTION, THROTTLE_ACTION, GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import SteadyTime
from safeguards.adapters.csp.shared_rates import SharedRates
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import Policy, default_policy
from safeguards.core.steady_time import ABSORB_RATE

T0 = 1_800_000_000.0
HOUR = 3600.0


class HostClocks:
    """A host's wall clock (which steps) and monotonic clock (which does not)."""

    def __init__(self) -> None:
        self.mono = 0.0
        self.offset = 0.0

    def wall(self) -> float:
        return T0 + self.mono + self.offset

    def monotonic(self) -> float:
        return self.mono


def command(account: str, level: int, policy: Policy, expires_at: datetime | None
            ) -> EnforcementCommand:
    tier = policy.rate_tiers[level]
    return EnforcementCommand(
        command_id="c1", account_id=account, region="eu", level=level,
        requests_per_minute=tier.requests_per_minute, tokens_per_minute=tier.tokens_per_minute,
        interventions=policy.ladder[level].interventions, expires_at=expires_at, version=1,
        policy_version=policy.version, reason="test", issued_at=datetime.fromtimestamp(T0, UTC))


def setup() -> tuple[Gate, HostClocks, SteadyTime]:
    host = HostClocks()
    now = SteadyTime(host.wall, host.monotonic)
    gate = Gate(default_policy())
    gate.touch(now())
    return gate, host, now


def test_a_forward_step_does_not_end_an_enforcement_early() -> None:
    gate, host, now = setup()
    gate.apply(command("a", 4, gate.policy, datetime.fromtimestamp(T0 + 1800, UTC)), now())
    host.mono, host.offset = 10.0, HOUR  # ten seconds on, the wall clock leaps an hour
    gate.touch(now())
    assert gate.peek("a", host.wall()).status == 200  # on the raw wall clock: already over
    d = gate.check(GateRequest("a", "r1"), now())
    assert (d.action, d.status) == (BLOCK_ACTION, 403)
    # It ends when its half hour has passed, early by at most the part of the step taken in
    # meanwhile (1 % of the time that passed: 18 s of 30 min).
    host.mono = 1800 - ABSORB_RATE * 1800 - 1
    gate.touch(now())
    assert gate.check(GateRequest("a", "r2"), now()).action == BLOCK_ACTION
    host.mono = 1800.0
    gate.touch(now())
    assert gate.check(GateRequest("a", "r3"), now()).action != BLOCK_ACTION


def test_a_backward_step_does_not_make_a_throttle_last_an_hour() -> None:
    gate, host, now = setup()
    gate.apply(command("a", 3, gate.policy, None), now())  # 10 requests a minute
    decisions = [gate.check(GateRequest("a", f"r{i}"), now()) for i in range(11)]
    assert decisions[-1].action == THROTTLE_ACTION
    host.mono, host.offset = 1.0, -HOUR
    # on the raw wall clock the account would wait out the hour as well
    raw = gate.check(GateRequest("a", "raw"), host.wall())
    assert raw.action == THROTTLE_ACTION and raw.retry_after_s > HOUR
    late = gate.check(GateRequest("a", "late"), now())
    assert late.action == THROTTLE_ACTION and late.retry_after_s < 6.0
    host.mono = 6.5  # one emission interval after the quota ran out: one more request passes
    assert gate.check(GateRequest("a", "next"), now()).action != THROTTLE_ACTION


def test_a_backward_step_does_not_hide_a_silent_feed() -> None:
    gate, host, now = setup()
    host.mono, host.offset = 1.0, -HOUR
    # the feed falls silent; its staleness bound passes by the monotonic clock
    host.mono = 1.0 + gate.policy.gate.max_staleness_s + 1
    assert gate.staleness(host.wall()) < 0  # the raw wall clock would call it fresh for an hour
    assert gate.staleness(now()) > gate.policy.gate.max_staleness_s
    gate.check(GateRequest("fresh", "r1"), now())
    assert gate.fallbacks[("stale_cache", "open")] == 1


def test_workers_on_clocks_a_step_apart_share_a_quota_without_an_hours_throttle() -> None:
    """A worker started after a backward step reads the shared table an hour behind the others:
    what they spent counts as one window spent, not as an hour's debt."""
    rates = SharedRates.create(slots=64, stripes=4)
    try:
        for _ in range(10):  # 10 a minute, spent at once by a worker on the old clock
            assert rates.take("acct-1", T0 + HOUR, 6.0) is None
        assert rates.take("acct-1", T0 + HOUR, 6.0) is not None
        behind = rates.take("acct-1", T0, 6.0)  # the new worker, an hour behind
        assert behind is not None and behind == ("rate_requests", 6.0)
        assert rates.take("acct-1", T0 + 6.0, 6.0) is None
    finally:
        rates.close()
