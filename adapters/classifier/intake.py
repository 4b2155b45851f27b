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
on to the contextual model. Everything is still scored, with the same model and the same result;
only the order changes, and an ordinary item waits at most while urgent ones are batched.
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


class ContentTriage:
    """Which content items the stream scores first. Bounded: at most ``capacity`` accounts
    remembered as seen and as many entities as flagged (least recently used forgotten)."""

    def __init__(self, thresholds: Mapping[str, float], first_stage: FirstStage | None = None,
                 *, fresh_prompts: int = 3, flagged_for_s: float = 900.0,
                 capacity: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.thresholds = dict(thresholds)
        self.first_stage = first_stage
        self.fresh_prompts = fresh_prompts
        self.flagged_for_s = flagged_for_s
        self.capacity = capacity
        self.clock = clock
        self._seen: OrderedDict[str, int] = OrderedDict()  # account -> prompts seen
        self._flagged: OrderedDict[str, float] = OrderedDict()  # entity -> when (clock)
        # why items were urgent (fresh, flagged, first_stage) and how many were not (ordinary)
        self.counts: dict[str, int] = {}

    @property
    def remembered(self) -> tuple[int, int]:
        """How many accounts it remembers as seen, and how many entities as flagged."""
        return len(self._seen), len(self._flagged)

    def urgent(self, item: ContentItem, aggregates: tuple[str, ...]) -> bool:
        """Whether ``item`` (whose request named ``aggregates``) is scored first; counts the
        account's prompt as seen."""
        reason = self._reason(item, aggregates)
        self.counts[reason or "ordinary"] = self.counts.get(reason or "ordinary", 0) + 1
        return reason is not None

    def _reason(self, item: ContentItem, aggregates: tuple[str, ...]) -> str | None:
        fresh = False
        if item.kind == "prompt":
            seen = self._seen.pop(item.account_id, 0)
            self._remember(self._seen, item.account_id, seen + 1)
            fresh = seen < self.fresh_prompts
        now = self.clock()
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
