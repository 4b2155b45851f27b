"""OpenTelemetry spans for the actors: a signal's decision, its commit and the relay's publish of
the enforcement it sent, joined to the trace its message came with.

Off (nothing at all) until ``install`` gives a tracer provider (``regions.tracing``). A signal's
``traceparent`` header (``core.trace_context``, read defensively: malformed is counted and
starts a new trace) is the parent of its decision span; the commit span (the group commit's
time, one span per traced signal) is the decision's child; the relay's publish of a command the
commit wrote is the commit's child, and is the current span while the bus adapter publishes, which
writes it into the command's headers for the gate's apply span. The commit's context is kept
(in memory, bounded) until the command is confirmed published, so a command the fast path could
not send (its queue full, the bus down, an older command of the account unconfirmed) is
re-published by the slow path in a span with the same parent, and the gate's apply joins the same
trace. Rows read back by another process, or after a restart, carry no context.
Spans carry signal types, rules, levels and counts, never content and never an account id.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer

from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.trace_context import read_traceparent

if TYPE_CHECKING:
    from safeguards.actors.commit import Result

SCOPE = "safeguards.actors"
TRACER: Tracer | None = None  # None: tracing is off (the default)
malformed_traceparents = 0
PENDING_LIMIT = 4096  # commands committed and not yet confirmed published
# message id -> the commit span that wrote it, for the relay's publish span (either path)
_pending: OrderedDict[str, SpanContext] = OrderedDict()


def install(provider: TracerProvider | None) -> None:
    global TRACER
    TRACER = None if provider is None else provider.get_tracer(SCOPE)
    _pending.clear()


def _parent(headers: Mapping[str, str] | None) -> Context | None:
    global malformed_traceparents
    parent, malformed = read_traceparent(headers)
    if parent is None:
        malformed_traceparents += malformed
        return None
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(
        parent.trace_id, parent.span_id, is_remote=True,
        trace_flags=TraceFlags(1 if parent.sampled else 0))))


def start_decision(headers: Mapping[str, str] | None, signal_type: str) -> Span:
    """A signal's decision span (ended by ``decided``/``rejected``), child of its message's."""
    assert TRACER is not None
    return TRACER.start_span("safeguards.actor.decide", _parent(headers),
                             kind=SpanKind.CONSUMER,
                             attributes={"safeguards.signal": signal_type})


def decided(span: Span, request: AppendRequest) -> SpanContext:
    span.set_attributes({"safeguards.events": len(request.events),
                         "safeguards.event_types": [type(e.body).__name__
                                                    for e in request.events],
                         "safeguards.outbox": len(request.outbox)})
    span.end()
    return span.get_span_context()


def rejected(span: Span, error: Exception) -> None:
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    span.end()


def committed(requests: Sequence[AppendRequest], contexts: Mapping[int, SpanContext],
              results: Sequence[Result] | BaseException, started_ns: int) -> None:
    """One commit span per traced decision of a round (the cycle's time), and the relay's
    parent for each command it wrote."""
    assert TRACER is not None
    for index, context in contexts.items():
        result = results if isinstance(results, BaseException) else results[index]
        span = TRACER.start_span("safeguards.actor.commit",
                                 trace.set_span_in_context(NonRecordingSpan(context)),
                                 kind=SpanKind.CLIENT, start_time=started_ns,
                                 attributes={"db.system.name": "postgresql",
                                             "db.operation.name": "append_batch",
                                             "safeguards.outcome": _outcome(result)})
        if isinstance(result, AppendResult) and not result.duplicate:
            for message in requests[index].outbox:
                _pending[message.message_id] = span.get_span_context()
                if len(_pending) > PENDING_LIMIT:
                    _pending.popitem(last=False)
        span.end()


def _outcome(result: object) -> str:
    if isinstance(result, AppendResult):
        return "duplicate" if result.duplicate else "committed"
    return type(result).__name__


def relay_span(message_id: str, subject_kind: str, path: str = "fast"
               ) -> AbstractContextManager[Span] | None:
    """The relay's publish span (``path``: fast or slow) for a command committed under a
    traced decision (current while the bus publishes, which carries it on), or None."""
    assert TRACER is not None
    context = _pending.get(message_id)
    if context is None:
        return None
    return TRACER.start_as_current_span(
        "safeguards.relay.publish", trace.set_span_in_context(NonRecordingSpan(context)),
        kind=SpanKind.PRODUCER, record_exception=False, set_status_on_exception=False,
        attributes={"messaging.system": "nats", "messaging.operation.type": "send",
                    "safeguards.message": subject_kind, "safeguards.relay.path": path})


def published(message_id: str) -> None:
    """A command confirmed published: no later publish of it needs its context."""
    _pending.pop(message_id, None)
