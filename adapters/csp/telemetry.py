"""Telemetry without waiting: request signals and content leave through a bounded buffer.

A request never awaits the broker. ``emit`` puts an encoded message into a bounded in-memory
buffer (``send_nowait``); a full buffer is a counted drop. A drain task in the owner's task group
publishes to JetStream asynchronously (``publish_async``, with a ``Nats-Msg-Id`` so a retry is
deduplicated) and does not wait for each acknowledgement: acks resolve futures, and a sweeper
counts as unsent every publish not acknowledged within its deadline, as well as every one that
failed (NATS down, no stream, a stall past the in-flight limit). Nothing is dropped without a
count, and nothing here ever holds up a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime

import anyio
import nats
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.js.api import PubAck

from safeguards.adapters.csp.gate import GateRequest
from safeguards.adapters.csp.link import BusLink
from safeguards.core.codec import encode_record, encode_signal
from safeguards.core.content import ContentItem
from safeguards.core.events import ContentKind, RequestObserved, Signal
from safeguards.core.subjects import content_subject, inputs_subject

log = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 200_000  # the content stream's records stay well under the codec's 1 MiB

SUBJECT_CACHE_SIZE = 100_000
PUBLISH_BATCH = 256
_Item = tuple[str, bytes, str]  # subject, payload, message id


class Telemetry:
    def __init__(self, link: BusLink | None, region: str, partitions: int, *,
                 capacity: int = 10_000, workers: int = 1, publish_timeout_s: float = 2.0) -> None:
        self.link = link
        self.region = region
        self.partitions = partitions
        self.publish_timeout_s = publish_timeout_s
        self.workers = workers
        self._send, self._receive = anyio.create_memory_object_stream[_Item](capacity)
        self._subject_cache: dict[str, tuple[str, str]] = {}
        self._inflight: deque[tuple[float, asyncio.Future[PubAck]]] = deque()
        self.sent = 0
        self.dropped: dict[str, int] = {"buffer_full": 0, "not_connected": 0,
                                        "publish_failed": 0, "closed": 0}

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def emit(self, subject: str, payload: bytes, msg_id: str) -> bool:
        try:
            self._send.send_nowait((subject, payload, msg_id))
        except anyio.WouldBlock:
            self.dropped["buffer_full"] += 1
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped["closed"] += 1
            return False
        return True

    def emit_request(self, request: GateRequest, action: str, input_tokens: int,
                     output_tokens: int, *, at: datetime | None = None) -> None:
        """The metadata-only RequestObserved signal for the account's actor."""
        occurred = at or datetime.now(UTC)
        signal = Signal(
            signal_id=f"req:{request.request_id}", account_id=request.account_id,
            region=self.region, occurred_at=occurred, correlation_id=request.request_id,
            observation=RequestObserved(
                request_id=request.request_id, model=request.model, surface=request.surface,
                input_tokens=input_tokens, output_tokens=output_tokens,
                prompt_chars=request.prompt_chars, prompt_sha256=request.prompt_sha256,
                streamed=request.streamed, action=action,
            ),
        )
        self.emit(self._subjects(request.account_id)[0], encode_signal(signal), signal.signal_id)

    def emit_content(self, request: GateRequest, kind: ContentKind, text: str, *,
                     at: datetime | None = None) -> None:
        """Prompt or completion text for asynchronous scoring (the short-TTL content stream)."""
        if not text:
            return
        item = ContentItem(
            request_id=request.request_id, account_id=request.account_id, region=self.region,
            kind=kind, text=text[:MAX_CONTENT_CHARS], occurred_at=at or datetime.now(UTC),
            correlation_id=request.request_id,
        )
        self.emit(self._subjects(request.account_id)[1], encode_record(item),
                  f"{kind}:{request.request_id}")

    def _subjects(self, account_id: str) -> tuple[str, str]:
        """The account's inputs and content subjects, memoised (bounded) off the hot path."""
        found = self._subject_cache.get(account_id)
        if found is None:
            if len(self._subject_cache) >= SUBJECT_CACHE_SIZE:
                del self._subject_cache[next(iter(self._subject_cache))]
            found = (inputs_subject(self.region, self.partitions, account_id),
                     content_subject(self.region, account_id))
            self._subject_cache[account_id] = found
        return found

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep)
            for _ in range(self.workers):
                tg.start_soon(self._drain, self._receive.clone())
            task_status.started()

    async def _drain(self, items: MemoryObjectReceiveStream[_Item]) -> None:
        async with items:
            async for first in items:
                # Take whatever else is already queued and publish it without yielding, so
                # nats-py's flusher writes the whole batch in one system call, not one each.
                batch = [first]
                while len(batch) < PUBLISH_BATCH:
                    try:
                        batch.append(items.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._publish(batch)

    async def _publish(self, batch: list[_Item]) -> None:
        link = self.link
        js = link.js if link is not None else None
        if js is None or link is None or not link.is_connected:
            self.dropped["not_connected"] += len(batch)
            return
        deadline = time.monotonic() + self.publish_timeout_s
        for index, (subject, payload, msg_id) in enumerate(batch):
            try:
                # Our own deadline bounds a stall on nats-py's in-flight limit: its wait_stall
                # would wrap every publish in a task (twice the CPU).
                with anyio.fail_after(self.publish_timeout_s + 0.5):
                    ack = await js.publish_async(subject, payload,
                                                 headers={"Nats-Msg-Id": msg_id})
            except TimeoutError:
                self.dropped["publish_failed"] += len(batch) - index  # stalled: give up on it
                log.debug("telemetry publish stalled past its deadline")
                return
            except (OSError, nats.errors.Error) as exc:
                self.dropped["publish_failed"] += 1
                log.debug("telemetry publish failed: %s", type(exc).__name__)
                continue
            ack.add_done_callback(self._acknowledged)
            self._inflight.append((deadline, ack))

    def _acknowledged(self, ack: asyncio.Future[PubAck]) -> None:
        if ack.cancelled():
            return  # the sweeper gave up on it and counted it
        if ack.exception() is not None:
            self.dropped["publish_failed"] += 1
        else:
            self.sent += 1

    async def _sweep(self) -> None:
        """Count publishes whose acknowledgement did not come within the deadline."""
        inflight = self._inflight
        while True:
            await anyio.sleep(min(0.25, self.publish_timeout_s / 2))
            now = time.monotonic()
            while inflight and (inflight[0][1].done() or inflight[0][0] <= now):
                _, ack = inflight.popleft()
                if not ack.done():
                    ack.cancel()
                    self.dropped["publish_failed"] += 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())
