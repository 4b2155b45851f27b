"""How the content stream's items reach the scorer: fetched as soon as they are there, and
scored in order of urgency.

*Fetching.* nats-py's ``fetch(n, timeout)``, once a waiting pull request has delivered its first
message, keeps waiting for the other ``n - 1`` until the timeout: on a stream that is not busy,
every item waited up to ``fetch_timeout_s`` (0.5 s) before it was scored (measured on 2 shared
cores: a median 0.3 s per fetch that returned anything). :func:`fetch_promptly` waits for one
message, then takes whatever else is already stored without waiting for more.

*Triage.* The content stream's scoring is what escalates an account whose screening could not
answer in time (a fresh account on a loaded machine), an organisation whose fresh accounts each
strike once, and a slow drip of borderline requests; ahead of it in the queue sat every benign
bulk sender's backlog (1,200 requests of a rate-limit prober, 120 of a heavy API user), and its
scores came seconds late. :class:`ContentTriage` marks the items to score first: the first
prompts of an account this process has not seen before (a fresh account), anything of an
account, organisation or API key one of whose recent scores reached the point where the policy
counts it (``evidence_thresholds``), and prompts the screening cascade's first stage would pass
on to the contextual model. Ahead of those goes a prompt its gate served without a score (its
inline screening missed its deadline or failed open, ``ContentItem.served_unscored``: a flag in
the gate's sealed record, never text): that account was not screened at all, and until this score
lands nothing stops it (a saturated classifier once delayed one 1.73 s behind the other urgent
items). Each account gets at most ``unscored_prompts`` of those per ``unscored_window_s``, and
they rank above other content only, never above the gates' inline screenings (the scorer's lane),
so a publisher marking every item cannot starve a screening. Everything is still scored, with the
same model and the same result; only the order changes, and no item waits forever (the scorer
moves what waited ``max_defer_s`` up a line).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from safeguards.adapters.classifier.first_stage import FirstStage
from safeguards.adapters.classifier.nats_service_settings import ClassifierSettings
from safeguards.core.content import ContentItem
from safeguards.core.events import Scores
from safeguards.core.policy import Policy

# After one message, what else is stored comes with it; a pull request for more that finds
# nothing expires after this long.
REST_WAIT_S = 0.005


async def fetch_promptly(psub: Any, settings: ClassifierSettings) -> list[Any]:
    """Up to ``fetch_batch`` messages of a pull subscription, returned as soon as one is there;
    TimeoutError (nats' or asyncio's, both TimeoutError) when none came within
    ``fetch_timeout_s``."""
    msgs: list[Any] = await psub.fetch(1, timeout=settings.fetch_timeout_s)
    if settings.fetch_batch > 1:
        with contextlib.suppress(TimeoutError):  # nothing else stored: score the one we have
            msgs += await psub.fetch(settings.fetch_batch - 1, timeout=REST_WAIT_S)
    return msgs


def evidence_thresholds(policy: Policy) -> dict[str, float]:
    """Per enabled category, the lowest score the policy counts at all (its strike threshold,
    or ``accumulate_above`` where borderline scores add up)."""
    return {c.name: min(c.threshold, c.accumulate_above) for c in policy.enabled_categories}


# The scorer's lines (``MicroBatchScorer.score``): first (``first=True``), urgent, ordinary.
FIRST, URGENT, ORDINARY = 0, 1, 2


class ContentTriage:
    """Which content items the stream scores first. Bounded: at most ``capacity`` accounts
    remembered as seen and as many entities as flagged (least recently used forgotten)."""

    def __init__(self, thresholds: Mapping[str, float], first_stage: FirstStage | None = None,
                 *, fresh_prompts: int = 3, flagged_for_s: float = 900.0,
                 unscored_prompts: int = 10, unscored_window_s: float = 60.0,
                 capacity: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.thresholds = dict(thresholds)
        self.first_stage = first_stage
        self.fresh_prompts = fresh_prompts
        self.flagged_for_s = flagged_for_s
        self.unscored_prompts = unscored_prompts
        self.unscored_window_s = unscored_window_s
        self.capacity = capacity
        self.clock = clock
        self._seen: OrderedDict[str, int] = OrderedDict()  # account -> prompts seen
        self._flagged: OrderedDict[str, float] = OrderedDict()  # entity -> when (clock)
        # account -> (when its window began, prompts served unscored put first in it)
        self._unscored: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # why items went first (unscored) or were urgent (fresh, flagged, first_stage), and how
        # many were neither (ordinary)
        self.counts: dict[str, int] = {}

    @property
    def remembered(self) -> tuple[int, int]:
        """How many accounts it remembers as seen, and how many entities as flagged."""
        return len(self._seen), len(self._flagged)

    def rank(self, item: ContentItem, aggregates: tuple[str, ...]) -> int:
        """The scorer line of ``item`` (whose request named ``aggregates``): FIRST, URGENT or
        ORDINARY; counts the account's prompt as seen and why."""
        reason = self._reason(item, aggregates)
        self.counts[reason or "ordinary"] = self.counts.get(reason or "ordinary", 0) + 1
        return ORDINARY if reason is None else FIRST if reason == "unscored" else URGENT

    def marks(self, item: ContentItem, aggregates: tuple[str, ...]) -> tuple[bool, bool]:
        """``rank`` as the scorer's ``urgent`` and ``first``."""
        line = self.rank(item, aggregates)
        return line == URGENT, line == FIRST

    def urgent(self, item: ContentItem, aggregates: tuple[str, ...]) -> bool:
        """Whether ``item`` is scored ahead of ordinary items (``rank``)."""
        return self.rank(item, aggregates) != ORDINARY

    def _reason(self, item: ContentItem, aggregates: tuple[str, ...]) -> str | None:
        fresh = False
        now = self.clock()
        if item.kind == "prompt":
            seen = self._seen.pop(item.account_id, 0)
            self._remember(self._seen, item.account_id, seen + 1)
            fresh = seen < self.fresh_prompts
            if item.served_unscored and self._unscored_turn(item.account_id, now):
                return "unscored"
        for entity in (item.account_id, *aggregates):
            at = self._flagged.get(entity)
            if at is not None and now - at < self.flagged_for_s:
                return "flagged"
        if fresh:
            return "fresh"
        if (item.kind == "prompt" and self.first_stage is not None
                and self.first_stage.check(item.text).reason == "flagged"):
            return "first_stage"
        return None

    def _unscored_turn(self, account: str, now: float) -> bool:
        """Whether the account has an unscored prompt's turn first left in its window (taken)."""
        began, taken = self._unscored.pop(account, (now, 0))
        if now - began >= self.unscored_window_s:
            began, taken = now, 0
        turn = taken < self.unscored_prompts
        self._remember(self._unscored, account, (began, taken + turn))
        return turn

    def observe(self, item: ContentItem, aggregates: tuple[str, ...], scores: Scores) -> None:
        """A score of ``item``: where it reaches a category's evidence threshold, the account
        and the aggregates its request named are flagged (their next items go first)."""
        if any(s >= self.thresholds.get(c, 2.0) for c, s in scores):
            now = self.clock()
            for entity in (item.account_id, *aggregates):
                self._flagged.pop(entity, None)
                self._remember(self._flagged, entity, now)

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        while len(table) > self.capacity:
            table.popitem(last=False)
