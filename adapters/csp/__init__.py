"""The inline CSP adapter: what sits in a cloud provider's serving path.

- ``gate``: the in-process gate (enforcement cache, GCRA on requests and tokens, decisions,
  fail-open/closed fallbacks, plain-int counters). ``check`` is synchronous and microseconds.
- ``feed``: keeps the gate's cache current from ``sg.<region>.enforce.>`` (last value per
  account, then live), with heartbeats as the staleness clock.
- ``admission``: the request half shared by both front ends (account header, body, check,
  synchronous classification over ``sg.<region>.classify``, then observe).
- ``proxy``: the Anthropic Messages-compatible reverse proxy (raw ASGI on uvicorn; also passes
  ``/v1/messages/count_tokens`` and ``/v1/models`` through), with ``upstream_client`` as its
  pooled HTTP/1.1 client (an asyncio protocol on httptools) and ``wire`` for the Messages/SSE
  details.
- ``extproc``: the same gate behind Envoy's External Processing filter (gRPC).
- ``telemetry``: metadata-only RequestObserved signals and content for scoring, through a
  bounded, non-blocking buffer, encoded and published in batches after the response (core
  publishes, JetStream acks counted per batch); ``metrics``: Prometheus.
- ``upstream``: a scripted Messages API model stand-in (demos, tests, benchmarks).
- ``cli``: ``safeguards proxy``, ``safeguards upstream``, ``safeguards extproc``.
"""
