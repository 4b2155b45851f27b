"""Turning traces on for one process: the adapters' and the actors' tracers from one provider
(``adapters.tracing.provider_from_environment``: an OTLP/HTTP exporter when an endpoint is
configured, else nothing at all)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from safeguards.actors import tracing as actor_tracing
from safeguards.adapters import tracing as adapter_tracing


def install(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` everywhere in this process (None: tracing off)."""
    adapter_tracing.install(provider)
    actor_tracing.install(provider)


def configure_from_environment(service: str) -> TracerProvider | None:
    """The OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables decide; the provider (to shut down, so
    its last spans are exported) or None."""
    provider = adapter_tracing.provider_from_environment(service)
    if provider is not None:
        install(provider)
    return provider
