"""Telemetry without waiting: request signals and content leave through a bounded buffer.

A request never awaits the broker, nor pays for encoding on its way out. ``emit_observed`` (and the
single-message ``emit_request`` / ``emit_content``) puts one small tuple of references into a
bounded in-memory buffer (``send_nowait``), after the response has been sent; a full buffer is a
counted drop. A drain task in the owner's task group waits a few milliseconds for company
(``linger_s``), takes whatever is queued, encodes it (the metadata-only RequestObserved signal to
the account's partition subject, the prompt and the completion to the region's content subject) and
hands the whole batch to NATS as core publishes that carry a reply subject naming the batch
(``<inbox>.<batch>``): JetStream stores each message and answers on that subject, one wildcard
subscription counts the answers, and a sweeper counts as unsent whatever a batch has not had
acknowledged within its deadline, as well as every negative answer (no stream, a store failure: the
server says so on the reply subject). No per-message futures, tasks or timers, nothing dropped
without a count, and nothing here ever holds up a response.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import nats
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind

from safeguards.adapters import tracing
from safeguards.adapters.bus.producer_auth import ProducerKeys
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import GateRequest
from safeguards.core.codec import encode_record, encode_signal
from safeguards.core.content import ContentItem, clip_middle
from safeguards.core.events import ContentKind, RequestObserved, Signal
from safeguards.core.homes import HomeEntry
from safeguards.core.subjects import content_subject, inputs_subject

log = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 200_000  # the content stream's records stay well under the codec's 1 MiB

SUBJECT_CACHE_SIZE = 100_000
PUBLISH_BATCH = 256  # queued items encoded and written per drain pass

# A queued item: what the drain needs to build the messages of one request, by reference.
# (request, action, input tokens, output tokens, prompt, completion, unix time, messages,
# the request's span while tracing is on). ``messages`` is 1 for a signal only (prompt and
# completion None), else what it expands to.
_Item = tuple[GateRequest, str, int, int, "str | None", "str | None", float, int,
              "SpanContext | None"]
# An encoded message: (subject, payload, the home it is forwarded to, its trace context)
_Message = tuple[str, bytes, "HomeEntry | None", "SpanContext | None"]
_CONTENT_ONLY = ""  # the action of an item that carries content and no signal
_KINDS: tuple[ContentKind, ContentKind] = ("prompt", "completion")


class _Batch:
    __slots__ = ("acked", "deadline", "expected", "failed")

    def __init__(self, expected: int, deadline: float) -> None:
        self.expected = expected
        self.deadline = deadline
        self.acked = 0
        self.failed = 0


class Telemetry:
    def __init__(self, link: BusLink | None, region: str, partitions: int, *,
                 capacity: int = 10_000, workers: int = 1, publish_timeout_s: float = 2.0,
                 linger_s: float = 0.005, producer: ProducerKeys | None = None) -> None:
        self.link = link
        self.producer = producer  # signs every message: the nodes and classifier check it
        self.linger_s = linger_s
        self.region = region
        self.partitions = partitions
        self.publish_timeout_s = publish_timeout_s
        self.workers = workers
        # Home routing (``csp.homes``): where an account is homed elsewhere, its signal goes
        # to the home's input subject signed with the pair's forwarding key, and its content
        # stays here, naming the home its scores go to.
        self.homes: Callable[[str], HomeEntry | None] | None = None
        self.forwarders: dict[str, ProducerKeys] = {}
        self.capacity = capacity
        self._send, self._receive = anyio.create_memory_object_stream[_Item](capacity)
        self._subject_cache: dict[str, tuple[str, str]] = {}
        self._batches: dict[int, _Batch] = {}
        self._deadlines: deque[tuple[float, int]] = deque()
        self._next_batch = 0
        self._inbox: str | None = None
        self._draining = 0  # batches taken off the buffer, not yet handed to NATS
        self.sent = 0
        self.dropped: dict[str, int] = {"buffer_full": 0, "not_connected": 0,
                                        "publish_failed": 0, "closed": 0}

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def settle(self, deadline_s: float) -> bool:
        """Waits (up to ``deadline_s``) until everything queued so far is published and
        acknowledged or counted as unsent (a shutdown's last messages); True when it is."""
        end = anyio.current_time() + deadline_s  # polled: three counters, set in three places
        while anyio.current_time() < end:
            if not (self.queued or self._draining or self._batches):
                return True
            await anyio.sleep(0.005)
        return False

    def _put(self, item: _Item) -> bool:
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self.dropped["buffer_full"] += item[7]
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped["closed"] += item[7]
            return False
        return True

    def emit_observed(self, request: GateRequest, action: str, input_tokens: int,
                      output_tokens: int, prompt: str, completion: str) -> bool:
        """After a response: its signal, and its prompt and completion for scoring."""
        messages = 1 + bool(prompt) + bool(completion)
        traced = None if tracing.TRACER is None else _request_span(request, action,
                                                                  input_tokens, output_tokens)
        return self._put((request, action, input_tokens, output_tokens, prompt, completion,
                          time.time(), messages, traced))

    def emit_request(self, request: GateRequest, action: str, input_tokens: int,
                     output_tokens: int, *, at: datetime | None = None) -> bool:
        """The metadata-only RequestObserved signal for the account's actor."""
        when = at.timestamp() if at is not None else time.time()
        traced = None if tracing.TRACER is None else _request_span(request, action,
                                                                  input_tokens, output_tokens)
        return self._put((request, action, input_tokens, output_tokens, None, None, when, 1,
                          traced))

    def emit_content(self, request: GateRequest, kind: ContentKind, text: str, *,
                     at: datetime | None = None) -> bool:
        """Prompt or completion text for asynchronous scoring (the short-TTL content stream)."""
        if not text:
            return True
        when = at.timestamp() if at is not None else time.time()
        prompt, completion = (text, None) if kind == "prompt" else (None, text)
        traced = None if tracing.TRACER is None else _request_span(request, "", 0, 0)
        return self._put((request, _CONTENT_ONLY, 0, 0, prompt, completion, when, 1, traced))

    def content_message(self, request: GateRequest, text: str) -> tuple[str, bytes, dict[str, str]]:
        """A prompt's content-stream message as the drain publishes it (clipped, sealed, signed):
        subject, payload, headers, for a publisher that awaits its acknowledgement itself
        (``batch_prompts``)."""
        return self.observed_messages(request, _CONTENT_ONLY, 0, 0, text, "")[0]

    def observed_messages(self, request: GateRequest, action: str, input_tokens: int,
                          output_tokens: int, prompt: str, completion: str
                          ) -> list[tuple[str, bytes, dict[str, str]]]:
        """``emit_observed``'s messages as the drain publishes them (the signal to the account's
        home, each signed): subject, payload, headers, for a publisher that awaits their
        acknowledgement itself (``job_outputs``)."""
        out: list[_Message] = []
        self._encode((request, action, input_tokens, output_tokens, prompt, completion,
                      time.time(), 1, None), out)
        return [(subject, payload, {} if (signer := self._signer(home)) is None
                 else signer.headers(subject, payload)) for subject, payload, home, _ in out]

    def _signer(self, home: HomeEntry | None) -> ProducerKeys | None:
        """Who signs a message: the region's producer key, or the forwarding key of its home."""
        return self.producer if home is None else self.forwarders.get(home.home)

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

    def _encode(self, item: _Item, out: list[_Message],
                context: SpanContext | None = None) -> None:
        """``item``'s messages into ``out``, carrying ``context`` (its publish span's)."""
        request, action, tokens_in, tokens_out, prompt, completion, when, _, _ = item
        at = datetime.fromtimestamp(when, UTC)
        inputs, content = self._subjects(request.account_id)
        home = None if self.homes is None else self.homes(request.account_id)
        if home is not None:
            inputs = inputs_subject(home.home, home.partitions, request.account_id)
        if action:
            signal = Signal(
                signal_id=f"req:{request.request_id}", account_id=request.account_id,
                region=self.region if home is None else home.home, occurred_at=at,
                correlation_id=request.request_id,
                observation=RequestObserved(
                    request_id=request.request_id, model=request.model,
                    surface=request.surface, input_tokens=tokens_in, output_tokens=tokens_out,
                    prompt_chars=request.prompt_chars, prompt_sha256=request.prompt_sha256,
                    streamed=request.streamed, action=action,
                    organization_id=request.organization_id, project_id=request.project_id,
                    api_key_fingerprint=request.api_key_fingerprint,
                    prompt_link=request.prompt_link, fallback=request.fallback,
                ),
            )
            out.append((inputs, encode_signal(signal), home, context))
        for kind, text in zip(_KINDS, (prompt, completion), strict=True):
            if text:
                record = ContentItem(
                    request_id=request.request_id, account_id=request.account_id,
                    region=self.region, kind=kind,
                    text=clip_middle(text, MAX_CONTENT_CHARS)[0], occurred_at=at,
                    correlation_id=request.request_id,
                    organization_id=request.organization_id,
                    api_key_fingerprint=request.api_key_fingerprint,
                    home_region=None if home is None else home.home,
                    home_partitions=0 if home is None else home.partitions,
                    served_unscored=kind == "prompt" and request.served_unscored,
                    # its score carries it: a batch prompt's comes before its RequestObserved
                    prompt_link=request.prompt_link if kind == "prompt" else None,
                )
                data = encode_record(record)
                out.append((content, data if self.producer is None
                            else self.producer.seal(content, data), None, context))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep)
            for _ in range(self.workers):
                tg.start_soon(self._drain, self._receive.clone())
            task_status.started()

    async def _drain(self, items: MemoryObjectReceiveStream[_Item]) -> None:
        async with items:
            async for first in items:
                self._draining += 1
                # Take whatever else is already queued and publish it without yielding, so
                # nats-py's flusher writes the whole batch in one system call, not one each.
                batch = [first]
                if self.linger_s > 0:
                    # let a few more requests finish: one write to NATS (and one read of its
                    # acknowledgements) per batch instead of per request
                    await anyio.sleep(self.linger_s)
                while len(batch) < PUBLISH_BATCH:
                    try:
                        batch.append(items.receive_nowait())
                    except anyio.WouldBlock:
                        break
                try:
                    await self._publish(batch)
                finally:
                    self._draining -= 1

    async def _ack_inbox(self) -> str | None:
        """The wildcard subscription that counts acknowledgements (made once connected)."""
        if self._inbox is not None:
            return self._inbox
        link = self.link
        nc = link.nc if link is not None else None
        if nc is None or not nc.is_connected:
            return None
        inbox = nc.new_inbox()
        with anyio.fail_after(self.publish_timeout_s):
            await nc.subscribe(inbox + ".*", cb=self._acknowledged)
        self._inbox = inbox
        return inbox

    async def _publish(self, items: list[_Item]) -> None:
        expected = sum(item[7] for item in items)
        link = self.link
        nc = link.nc if link is not None else None
        if nc is None or not nc.is_connected:
            self.dropped["not_connected"] += expected
            return
        try:
            inbox = await self._ack_inbox()
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            log.debug("telemetry acknowledgement inbox failed: %s", type(exc).__name__)
            inbox = None
        if inbox is None:
            self.dropped["not_connected"] += expected
            return
        messages: list[_Message] = []
        spans: list[Span] = []
        for item in items:
            if item[8] is None:
                self._encode(item, messages)
            else:  # tracing: a publish span per request, from its queueing to its write
                span = _publish_span(item)
                spans.append(span)
                self._encode(item, messages, span.get_span_context())
        batch_id = self._next_batch
        self._next_batch += 1
        reply = f"{inbox}.{batch_id}"
        deadline = time.monotonic() + self.publish_timeout_s
        batch = _Batch(len(messages), deadline)
        self._batches[batch_id] = batch
        self._deadlines.append((deadline, batch_id))
        publish = nc.publish
        producer = self.producer
        for index, (subject, payload, home, context) in enumerate(messages):
            signer = producer if home is None else self.forwarders.get(home.home)  # _signer
            headers = None if signer is None else signer.headers(subject, payload)
            if context is not None:
                headers = {} if headers is None else dict(headers)
                tracing.inject(context, headers)
            try:
                await publish(subject, payload, reply=reply, headers=headers)
            except (OSError, nats.errors.Error) as exc:
                # not written (disconnected with a full reconnect buffer, closed): the rest of
                # the batch would meet the same fate
                unsent = len(messages) - index
                batch.expected -= unsent
                self.dropped["publish_failed"] += unsent
                log.debug("telemetry publish failed: %s", type(exc).__name__)
                break
        for span in spans:
            span.end()
        self._settle(batch_id, batch)

    async def _acknowledged(self, msg: Msg) -> None:
        try:
            batch_id = int(msg.subject.rpartition(".")[2])
        except ValueError:
            return  # not an answer to one of our batches
        batch = self._batches.get(batch_id)
        if batch is None:
            return  # the sweeper gave up on this batch and counted it
        data = msg.data
        # a PubAck is {"stream":..,"seq":..}; an error has "error", and a publish nothing
        # stores gets an empty no-responders status
        if not data or b'"error"' in data:
            batch.failed += 1
            self.dropped["publish_failed"] += 1
        else:
            batch.acked += 1
            self.sent += 1
        self._settle(batch_id, batch)

    def _settle(self, batch_id: int, batch: _Batch) -> None:
        if batch.acked + batch.failed >= batch.expected:
            self._batches.pop(batch_id, None)

    async def _sweep(self) -> None:
        """Count publishes whose acknowledgement did not come within the deadline."""
        deadlines = self._deadlines
        while True:
            await anyio.sleep(min(0.25, self.publish_timeout_s / 2))
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, batch_id = deadlines.popleft()
                batch = self._batches.pop(batch_id, None)
                if batch is not None:
                    self.dropped["publish_failed"] += batch.expected - batch.acked - batch.failed

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def _request_span(request: GateRequest, action: str, input_tokens: int,
                  output_tokens: int) -> SpanContext | None:
    """Tracing on: the usage (GenAI conventions) on the request's span, and its context for the
    messages the request sends (None outside a request span, as on ext_proc)."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return None
    if action and span.is_recording():
        span.set_attributes({tracing.GEN_AI_REQUEST_MODEL: request.model,
                             tracing.GEN_AI_INPUT_TOKENS: input_tokens,
                             tracing.GEN_AI_OUTPUT_TOKENS: output_tokens,
                             "safeguards.action": action,
                             "safeguards.request_id": request.request_id})
    return context


def _publish_span(item: _Item) -> Span:
    request, action, when, context = item[0], item[1], item[6], item[8]
    assert tracing.TRACER is not None and context is not None
    return tracing.TRACER.start_span(
        "safeguards.telemetry.publish", trace.set_span_in_context(NonRecordingSpan(context)),
        kind=SpanKind.PRODUCER, start_time=int(when * 1e9),
        attributes={"messaging.system": "nats", "messaging.operation.type": "send",
                    "safeguards.request_id": request.request_id,
                    "safeguards.signal": bool(action), "safeguards.content": item[7] > 1
                    or not action})
