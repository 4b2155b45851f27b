"""A backtest compares enforcement paths, not their totals: a candidate that reaches the same
levels as often, as high and to the same end, by another order or another rule, differs, and
the result names where the paths first part (the stored history's version, old and new step)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from safeguards.core.backtest import BacktestResult, Divergence, Trajectory, backtest
from safeguards.core.policy import parse_policy

from golden_events import GOLDEN, golden_history, rerouted_history

GOLDEN_POLICY = parse_policy((GOLDEN / "policy-default-2026.11.1.toml").read_text())
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _totals(t: Trajectory) -> tuple[object, ...]:
    """All a comparison of counts and maxima looked at."""
    return (len(t.changes), t.max_level, t.final_level, t.first_l3_at, t.strikes, t.links,
            t.linked_starts)


def test_the_golden_policy_takes_the_stored_path_step_by_step() -> None:
    result = backtest(golden_history(), GOLDEN_POLICY)
    assert result.divergence is None and result.describe() == "same"
    assert result.stored.path == result.candidate.path == (
        (1, "escalate.points"), (0, "expire.level"), (1, "escalate.points"),
        (2, "escalate.points"), (3, "escalate.points"), (4, "operator.set_level"),
        (0, "operator.clear"))
    # the versions each change followed: the stored L1's expiry was a timer's (v30, after v29),
    # which a replay has no timer for and makes on the next observation (v31)
    assert [v for v, _, _ in result.stored.steps] == [12, 29, 34, 38, 54, 73, 75]
    assert [v for v, _, _ in result.candidate.steps] == [12, 31, 34, 38, 54, 73, 75]


def test_levels_reached_in_another_order_differ_though_every_total_is_the_same() -> None:
    # stored: L1, L0, L2 (at v36), L1 (at v40), L3, L4, L0; the policy decides L1 then L2 there
    result = backtest(rerouted_history({36: (0, 2, "escalate.points"),
                                        40: (2, 1, "escalate.points")}), GOLDEN_POLICY)
    assert _totals(result.stored) == _totals(result.candidate)  # what "same" used to mean
    assert result.differs
    assert result.divergence == Divergence(34, (2, "escalate.points"), (1, "escalate.points"))
    assert result.describe() == "path differs from v34: L2 by escalate.points -> " \
                                "L1 by escalate.points"


def test_the_same_levels_by_another_rule_differ() -> None:
    result = backtest(rerouted_history({40: (1, 2, "escalate.severe")}), GOLDEN_POLICY)
    assert _totals(result.stored) == _totals(result.candidate)
    assert result.divergence == Divergence(38, (2, "escalate.severe"), (2, "escalate.points"))
    assert result.describe() \
        == "path differs from v38: L2 by escalate.severe -> L2 by escalate.points"


def _trajectory(path: list[tuple[int, str]]) -> Trajectory:
    """A trajectory whose i-th change follows the stored observation at version 10 * (i + 1)."""
    first_l3 = next((T0 + timedelta(minutes=i) for i, (level, _) in enumerate(path)
                     if level >= 3), None)
    return Trajectory(tuple((T0 + timedelta(minutes=i), level, rule)
                            for i, (level, rule) in enumerate(path)),
                      max((level for level, _ in path), default=0),
                      path[-1][0] if path else 0, first_l3, 0,
                      steps=tuple((10 * (i + 1), level, rule)
                                  for i, (level, rule) in enumerate(path)))


steps = st.tuples(st.integers(0, 5), st.sampled_from(("escalate.points", "escalate.severe",
                                                        "expire.level", "operator.set_level")))


@given(st.lists(steps, max_size=8).flatmap(
    lambda path: st.tuples(st.just(path), st.permutations(path))))
def test_a_reordered_path_differs_exactly_where_it_first_parts(
        paths: tuple[list[tuple[int, str]], list[tuple[int, str]]]) -> None:
    """Any reordering of the same changes (the same count, maximum and multiset of levels and
    rules) is the same only if it is the same sequence, and the first difference is named."""
    old, new = paths
    result = BacktestResult("acct", 1, _trajectory(old), _trajectory(new))
    assert result.differs == (old != new)
    parted = next((i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b), None)
    if parted is None:
        assert result.divergence is None and result.describe() == "same"
    else:
        assert result.divergence == Divergence(10 * (parted + 1), old[parted], new[parted])
        assert result.divergence.describe() in result.describe()
