"""A batch's admitted prompts stored on the region's content stream before its creation is answered.

A batch's results are read minutes to days after its creation, possibly on another process
(``batch_ledger``), and the region keeps no prompt text for that long (ARCHITECTURE, "Signals
raw content never reaches"). So the admitting gate publishes each admitted request's prompt to the
region's content stream as soon as the upstream has taken the batch (its requests then have their
result ids, ``batch_ledger.result_request_id``), and waits for JetStream to store each one (its
PubAck) before the creation is answered: a process killed at any point after answering has
already handed every admitted prompt to the classifier, which scores it under the request's
result id. A stored prompt is dropped from memory (``BatchItem.prompt = ""``), so the results'
observation, on whichever gate reads them first, sends the request's signal and its completion
and no second copy of the prompt; the message carries ``Nats-Msg-Id`` = ``batch-prompt:<result
id>`` (a re-publish inside the stream's duplicate window is stored once), and the classifier's
score ids derive from (result id, kind, model), so the account's history takes a prompt's score
once however often it is scored.

A prompt that is not stored within the telemetry's ``publish_timeout_s`` (disconnected, no stream,
a JetStream error, a timeout) stays held as before this module: queued with the batch's first
read on this process, when the batch is forgotten, or as the process shuts down; counted
(``safeguards_csp_batch_prompts_unpublished_total{reason}``) and logged at most once a minute, no
text. A creation is not refused for it: the upstream has already taken the batch. At most
``IN_FLIGHT`` publishes await their acknowledgement at once, all within that one deadline.

The prompt's score reaches the account before the request's RequestObserved (sent with its
result), so the content item carries the prompt's link key (``GateRequest.prompt_link``, the
region's HMAC of the newest user turn, never text) and the classifier puts it on the account's
own score: a flagged batch prompt links the account to the prompt's history by it
(``core.prompt_links.scored_prompt_link``) as a single request's does by its RequestObserved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from safeguards.adapters.csp.batch_ledger import BatchEntry, BatchItem
from safeguards.adapters.csp.sparse_warning import EVERY_S, SparseWarning
from safeguards.adapters.csp.stored_publish import stored
from safeguards.adapters.csp.telemetry import Telemetry

log = logging.getLogger(__name__)

IN_FLIGHT = 512  # publishes awaiting their acknowledgement at once (a batch takes up to 100,000)


def message_id(request_id: str) -> str:
    """The ``Nats-Msg-Id`` of a batch request's prompt on the content stream."""
    return f"batch-prompt:{request_id}"


class BatchPrompts:
    """Publishes a batch's admitted prompts to the content stream and awaits their storage."""

    def __init__(self, telemetry: Telemetry,
                 on_unpublished: Callable[[str, int], None] | None = None) -> None:
        self.telemetry = telemetry
        self.on_unpublished = on_unpublished  # (reason, prompts)
        self.published = 0
        self.unpublished: dict[str, int] = {}  # prompts by reason
        self._warning = SparseWarning(log, EVERY_S)

    async def publish(self, entry: BatchEntry) -> int:
        """Stores each prompt ``entry`` still holds (its request ids already its results')
        and drops the stored ones from memory; how many were not stored (counted)."""
        items = [item for item in entry.admitted.values() if item.prompt]
        failures: list[str] = []
        deadline_s = self.telemetry.publish_timeout_s
        limiter = anyio.CapacityLimiter(IN_FLIGHT)
        with anyio.move_on_after(deadline_s):
            async with anyio.create_task_group() as tg:
                for item in items:
                    tg.start_soon(self._publish, item, deadline_s, failures, limiter)
        left = sum(1 for item in items if item.prompt)
        self.published += len(items) - left
        if left:
            reason = failures[0] if failures else "timeout"
            self.unpublished[reason] = self.unpublished.get(reason, 0) + left
            if self.on_unpublished is not None:
                self.on_unpublished(reason, left)
            self._warning.note("%d admitted batch prompts were not stored on the %s content "
                               "stream (%s): held in memory until the batch's results are read "
                               "here (%d times since the last note)", left,
                               self.telemetry.region, reason)
        return left

    async def _publish(self, item: BatchItem, timeout_s: float, failures: list[str],
                       limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            await self._store(item, timeout_s, failures)

    async def _store(self, item: BatchItem, timeout_s: float, failures: list[str]) -> None:
        link = self.telemetry.link
        subject, payload, headers = self.telemetry.content_message(item.request, item.prompt)
        headers = {**headers, "Nats-Msg-Id": message_id(item.request.request_id)}
        failure = await stored(link.nc if link is not None else None, subject, payload,
                               timeout_s, headers=headers)
        if failure is not None:
            failures.append(failure)
            return
        item.prompt = ""  # stored (or a duplicate of a stored one): scored from the stream
