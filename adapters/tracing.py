"""OpenTelemetry traces for the adapters: off (nothing at all) unless a process installs a
tracer provider, and W3C trace context carried in NATS message headers.

``TRACER`` is None until ``install`` gives it a provider: every instrumented place checks that
one module attribute first, so with no exporter configured the inline path creates no span, reads
no context variable and writes no header. ``provider_from_environment`` builds the provider a
process installs: an OTLP/HTTP exporter behind a batch processor when
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or an explicit
endpoint) is set, else None.

Content capture is off by construction: spans carry GenAI semantic-convention attributes
(``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.operation.name``, usage tokens), actions,
reasons, sizes, categories and request ids, never prompt or completion text and never an
account id (the metrics do not label accounts either).

Trace context from a peer is read with ``core.trace_context`` (never raises): a malformed
``traceparent`` starts a new trace and is counted in ``malformed_traceparents``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from safeguards.core.trace_context import TRACEPARENT, format_traceparent, read_traceparent

log = logging.getLogger(__name__)

SCOPE = "safeguards.adapters"
TRACER: Tracer | None = None  # None: tracing is off (the default)
malformed_traceparents = 0  # trace context from peers that was not W3C: a new root each

# GenAI semantic conventions (opentelemetry-semantic-conventions' gen_ai attributes, which it
# ships as incubating): the names as the convention spells them.
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# the provider API a request came in on -> gen_ai.system's well-known values
GEN_AI_SYSTEMS = {"messages": "anthropic", "bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai"}

# a request's span on the inline adapter, the proxy's or ext_proc's (service.name says which)
REQUEST_SPAN = "safeguards.proxy.request"
BATCH_REQUEST_SPAN = "safeguards.batch.request"  # one request of a batch, admitted
BATCH_RESULT_SPAN = "safeguards.batch.result"  # its result, observed (first read)

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def install(provider: TracerProvider | None) -> None:
    """Turn tracing on with ``provider`` (off again with None)."""
    global TRACER
    TRACER = None if provider is None else provider.get_tracer(SCOPE)


def provider_from_environment(service: str, endpoint: str | None = None
                              ) -> TracerProvider | None:
    """An OTLP/HTTP-exporting provider when an endpoint is configured (``endpoint``: the full
    traces URL, e.g. ``http://jaeger:4318/v1/traces``; else the standard OTEL_* variables, which
    the exporter reads itself), or None: no exporter, no provider, no spans."""
    if endpoint is None and not any(os.environ.get(v) for v in _ENDPOINT_VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # e.g. xds-protos' older opentelemetry/proto laid over ours
        raise RuntimeError(
            "an OTLP endpoint is configured but the OTLP exporter cannot load "
            f"({exc}); reinstall opentelemetry-proto after the other packages "
            "(pip install --force-reinstall --no-deps opentelemetry-proto)") from exc

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("traces exported over OTLP/HTTP (%s)", endpoint or "from the environment")
    return provider


def remote_parent(headers: Mapping[str, str] | None) -> Context | None:
    """The context a message's ``traceparent`` names (None: none, or malformed and counted)."""
    global malformed_traceparents
    parent, malformed = read_traceparent(headers)
    if parent is None:
        if malformed:
            malformed_traceparents += 1
        return None
    context = SpanContext(parent.trace_id, parent.span_id, is_remote=True,
                          trace_flags=TraceFlags(1 if parent.sampled else 0))
    return trace.set_span_in_context(NonRecordingSpan(context))


def inject(context: SpanContext | None, headers: dict[str, str]) -> None:
    """Write ``context`` as the headers' ``traceparent`` (nothing for None or invalid)."""
    if context is not None and context.is_valid:
        headers[TRACEPARENT] = format_traceparent(context.trace_id, context.span_id,
                                                  context.trace_flags.sampled)


def inject_current(headers: dict[str, str]) -> None:
    """The current span's context into ``headers`` (only while tracing is on)."""
    if TRACER is not None:
        inject(trace.get_current_span().get_span_context(), headers)


def with_current(headers: dict[str, str]) -> dict[str, str]:
    """``headers``, with the current span's context while tracing is on."""
    inject_current(headers)
    return headers


def consuming(name: str, headers: Mapping[str, str] | None,
              attributes: Mapping[str, AttributeValue] | None = None
              ) -> AbstractContextManager[object]:
    """A consumer's span for handling one message, child of the span its ``traceparent`` names
    (a new root when it has none or a malformed one); nothing while tracing is off. Exceptions
    mark the span by their type only."""
    if TRACER is None:
        return nullcontext()
    return TRACER.start_as_current_span(name, remote_parent(headers), kind=SpanKind.CONSUMER,
                                        attributes=attributes, record_exception=False,
                                        set_status_on_exception=False)


def start_request(api: str, operation: str | None = "chat",
                  route: str | None = None) -> Span:
    """A request's server span (tracing on), not yet current: ``current`` makes it so around
    each piece of the request's handling, and the messages the request sends carry it."""
    assert TRACER is not None
    attributes: dict[str, AttributeValue] = {GEN_AI_SYSTEM: GEN_AI_SYSTEMS.get(api, api)}
    if operation is not None:
        attributes[GEN_AI_OPERATION] = operation
    if route is not None:
        attributes["safeguards.route"] = route
    return TRACER.start_span(REQUEST_SPAN, kind=SpanKind.SERVER, attributes=attributes)


@contextmanager
def current(span: Span | None) -> Iterator[None]:
    """``span`` as the current span inside the block (nothing for None)."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def failed(span: Span, error: BaseException) -> None:
    """The span's status: an error, by its type only (messages may quote the request)."""
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current_context() -> SpanContext | None:
    """The current span's context while tracing is on (None when off or outside a span)."""
    if TRACER is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def batch_item(name: str, parent: SpanContext | None = None
               ) -> AbstractContextManager[object]:
    """One request of a Message Batch: its admission (``parent`` None: a child of the current
    span, the creation's request) or its result's observation (``parent``: its admission's
    span, so the request's signals join the trace its creation began; the results read is a
    link). Nothing while tracing is off; no custom_id (the client's text) is recorded."""
    if TRACER is None:
        return nullcontext()
    context: Context | None = None
    links: list[Link] = []
    if parent is not None:
        reading = trace.get_current_span().get_span_context()
        links = [Link(reading)] if reading.is_valid else []
        context = trace.set_span_in_context(NonRecordingSpan(parent))
    return TRACER.start_as_current_span(
        name, context, kind=SpanKind.INTERNAL, links=links, record_exception=False,
        set_status_on_exception=False,
        attributes={GEN_AI_SYSTEM: GEN_AI_SYSTEMS["messages"], GEN_AI_OPERATION: "chat"})
