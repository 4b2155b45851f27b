"""The gate's counters, read by the metrics collector (``csp.metrics``).

``counts``: decisions by (action, reason). ``decided_by_level`` / ``refused_by_level``: every
decision and every refusal (blocked, throttled, failed closed, a stream stopped) by the level of
the account it was about, so that the refusals of accounts under no enforcement (L0, L1: where
false positives land) can be watched against the benign budget on their own.
``fallbacks``: fail-open / fail-closed fallbacks by (cause, mode).
"""

from __future__ import annotations

from safeguards.adapters.csp.decision import TERMINATE_ACTION, Decision
from safeguards.core.enforcement import LEVEL_NAMES


class GateCounters:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.decided_by_level = [0] * len(LEVEL_NAMES)
        self.refused_by_level = [0] * len(LEVEL_NAMES)
        self.fallbacks: dict[tuple[str, str], int] = {}
        self.first_stage_verdicts: dict[str, int] = {}  # the screening cascade's, by verdict

    def _count(self, decision: Decision) -> None:
        counts = self.counts
        key = decision.key
        counts[key] = counts.get(key, 0) + 1
        self.decided_by_level[decision.level] += 1
        if decision.status != 200:
            self.refused_by_level[decision.level] += 1

    def count_terminated(self, level: int, reason: str) -> None:
        """A stream stopped mid-answer: a refusal of a request already counted as decided."""
        key = (TERMINATE_ACTION, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.refused_by_level[level] += 1

    def _fallback(self, cause: str, mode: str) -> str:
        """Count a fallback; its mark (``<mode>:<cause>``), which the gate returns with what it
        decided (``Decision.fallback``, ``StreamVerdict.fallback``)."""
        key = (cause, mode)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1
        return f"{mode}:{cause}"
