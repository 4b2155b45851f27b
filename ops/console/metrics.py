"""Prometheus metrics of the console: requests by route and status, latency, sign-ins, audited
reads and operator actions sent. No account id or free text ever becomes a label."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

PAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
ROUTES = frozenset({"/", "/login", "/logout", "/accounts", "/timeline", "/events", "/state",
                    "/explain", "/linked", "/queue",
                    "/action", "/health", "/metrics"})


class ConsoleMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("safeguards_console_requests", "console requests",
                                ["route", "status"], registry=self.registry)
        self.seconds = Histogram("safeguards_console_request_seconds",
                                 "console request latency (server side)", ["route"],
                                 buckets=PAGE_BUCKETS, registry=self.registry)
        self.sign_ins = Counter("safeguards_console_sign_ins", "console sign-in attempts",
                                ["outcome"], registry=self.registry)
        self.reads = Counter("safeguards_console_reads_audited",
                             "operator reads recorded in the region's audit", ["command"],
                             registry=self.registry)
        self.actions = Counter("safeguards_console_actions",
                               "operator actions the console sent, by outcome",
                               ["action", "outcome"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeasuredApp:
    """ASGI middleware: counts and times every HTTP request by its route (static files as one
    route, unknown paths as ``other``)."""

    def __init__(self, app: Any, metrics: ConsoleMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = "/static" if path.startswith("/static/") else path if path in ROUTES else "other"
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.seconds.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, str(status[0])).inc()
