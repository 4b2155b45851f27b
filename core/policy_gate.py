"""The policy's ``[gate]`` section: what the inline gates do while they wait on the classifier
(deadlines, screening, probation) and how stale their enforcement cache may get."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safeguards.core.policy_document import DocumentChecker

# What a prompt's length adds to an inline deadline is counted up to this many characters: a
# very long prompt does not hold a request for seconds (at 60 ms per 1,000, at most 960 ms).
DEADLINE_CHARS_CAP = 16_000


@dataclass(frozen=True, slots=True)
class GatePolicy:
    max_staleness_s: float
    classify_deadline_ms: float
    stream_classify_chars: int
    stream_stop_threshold: float
    # Screening (the "screen" intervention: fresh and L0 accounts) waits at most this long for
    # the classifier and skips prompts longer than ``screen_max_chars`` (served, scored after).
    screen_deadline_ms: float = 10.0
    screen_max_chars: int = 4000
    # Both inline deadlines (``classify_deadline_ms`` and ``screen_deadline_ms``) are this much
    # longer per 1,000 characters of the prompt (counted up to ``DEADLINE_CHARS_CAP``): the
    # classifier reads a prompt window by window, so a fixed deadline let a long prompt (a padded
    # or framed harmful ask) miss it and be served unscored. A ceiling, not a wait.
    deadline_ms_per_1000_chars: float = 0.0
    # The cascade: a microsecond first stage clears what the contextual model would not flag;
    # only what it passes on waits for the classifier (false: every screened prompt does).
    screen_first_stage: bool = True
    # Per-account fairness at the screening classifier: while one of an account's requests is
    # screened, its further ones wait their turn (FIFO) at most this long, then each gets its
    # own full deadline; past it, served unscreened (``screen_account_queue``). At most
    # ``screen_account_waiters`` wait per account; beyond, served unscreened at once
    # (``screen_account_queue_full``). 0 ms: no queue, every request straight to the classifier.
    screen_account_queue_ms: float = 1000.0
    screen_account_waiters: int = 32
    # Probation: an account this gate holds no enforcement command for waits up to
    # ``probation_screen_deadline_ms`` (not ``screen_deadline_ms``) for its first
    # ``probation_requests`` screenings at the classifier (what the first stage passes on): a
    # fresh account's first harmful asks are scored before they are served, and only those wait.
    # Only answered screenings count (one that missed the deadline uses none up), with at most
    # 3 x ``probation_requests`` taken in all (``csp.gate_entry.PROBATION_TRIES``): it ends.
    probation_requests: int = 5
    probation_screen_deadline_ms: float = 250.0
    # Held prompts: a prompt the first stage holds (its own score at its hold point: most
    # harmful asks, a few benign ones), from an account on probation or one classified inline
    # (L1 and up), waits up to ``hold_ms`` for the classifier; one still unanswered for want of
    # time (its deadline or the account's turn passed: ``csp.admission.TOO_BUSY``) is refused
    # with HTTP 529 and a retry-after instead of served unscored. Its late score is kept, so the
    # client's retry is decided on it. A classifier that is down (unreachable, or answering
    # nothing: ``csp.admission.ALIVE_S``) fails as before.
    # 0: off (served unscored at the deadline where the level fails open).
    hold_ms: float = 0.0
    # A gate that has not yet read its region's enforcement (a start while NATS is down, with no
    # local snapshot) holds a request at most this long for it, then refuses (HTTP 503): an
    # account it knows nothing about is never served as if it were at L0. 0: refuse at once.
    before_sync_hold_ms: float = 1000.0

    def screen_deadline_for(self, chars: int) -> float:
        """Screening's deadline (ms) for a prompt of ``chars`` characters."""
        return self.screen_deadline_ms + self._per_length_ms(chars)

    def classify_deadline_for(self, chars: int) -> float:
        """Inline classification's deadline (ms, from L1) for a prompt of ``chars``."""
        return self.classify_deadline_ms + self._per_length_ms(chars)

    def _per_length_ms(self, chars: int) -> float:
        return self.deadline_ms_per_1000_chars * min(chars, DEADLINE_CHARS_CAP) / 1000


def gate_settings(c: DocumentChecker, g: dict[str, Any]) -> GatePolicy:
    """The ``[gate]`` table read and checked (problems go to ``c``)."""
    gate = GatePolicy(
        max_staleness_s=c.number(g, "max_staleness_s", "gate", lo=0.1, hi=86400, default=30),
        classify_deadline_ms=c.number(
            g, "classify_deadline_ms", "gate", lo=1, hi=10000, default=50
        ),
        stream_classify_chars=int(
            c.number(g, "stream_classify_chars", "gate", lo=16, hi=1_000_000, default=400)
        ),
        stream_stop_threshold=c.number(g, "stream_stop_threshold", "gate", lo=0, hi=1, default=0.8),
        screen_deadline_ms=c.number(g, "screen_deadline_ms", "gate", lo=1, hi=10000, default=10),
        screen_max_chars=int(
            c.number(g, "screen_max_chars", "gate", lo=0, hi=1_000_000, default=4000)
        ),
        deadline_ms_per_1000_chars=c.number(g, "deadline_ms_per_1000_chars", "gate", lo=0,
                                            hi=10000, default=0),
        screen_first_stage=bool(c.get(g, "screen_first_stage", bool, "gate", True)),
        screen_account_queue_ms=c.number(g, "screen_account_queue_ms", "gate", lo=0,
                                         hi=60_000, default=1000),
        screen_account_waiters=int(
            c.number(g, "screen_account_waiters", "gate", lo=1, hi=100_000, default=32)
        ),
        before_sync_hold_ms=c.number(g, "before_sync_hold_ms", "gate", lo=0, hi=60_000,
                                     default=1000),
        probation_requests=int(
            c.number(g, "probation_requests", "gate", lo=0, hi=100_000, default=5)),
        probation_screen_deadline_ms=c.number(g, "probation_screen_deadline_ms", "gate", lo=1,
                                              hi=10000, default=250),
        hold_ms=c.number(g, "hold_ms", "gate", lo=0, hi=60_000, default=0),
    )
    if gate.probation_screen_deadline_ms < gate.screen_deadline_ms:
        c.problems.append("gate.probation_screen_deadline_ms: must not be below "
                          "screen_deadline_ms")
    if 0 < gate.hold_ms < max(gate.probation_screen_deadline_ms, gate.classify_deadline_ms):
        c.problems.append("gate.hold_ms: must be 0 or not below probation_screen_deadline_ms "
                          "and classify_deadline_ms")
    return gate
