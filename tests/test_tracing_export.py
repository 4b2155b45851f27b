"""Where traces go: nowhere without an OTLP endpoint (no provider, no tracer), and over OTLP/HTTP
to the endpoint the standard variables name (a real exporter posting to a local HTTP server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from safeguards.actors import tracing as actor_tracing
from safeguards.adapters import tracing
from safeguards.regions.tracing import configure_from_environment, install


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    # a thread per connection: a connection the exporter keeps open never holds up shutdown
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_without_an_endpoint_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert configure_from_environment("safeguards-test") is None
    assert tracing.TRACER is None and actor_tracing.TRACER is None


def test_spans_go_to_the_configured_otlp_endpoint(monkeypatch: pytest.MonkeyPatch,
                                                  collector: str) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    provider = configure_from_environment("safeguards-test")
    assert provider is not None
    try:
        assert tracing.TRACER is not None and actor_tracing.TRACER is not None
        with tracing.consuming("safeguards.test.span", {"traceparent": "not-one"}):
            pass
        assert provider.force_flush(10_000)
    finally:
        install(None)
        provider.shutdown()
    (path, content_type, body), = _Collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"safeguards.test.span" in body and b"safeguards-test" in body
