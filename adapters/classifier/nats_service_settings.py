"""The classifier service's settings and the counters it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from safeguards.adapters.bus.streams import StreamSettings


@dataclass(frozen=True, slots=True)
class ClassifierSettings:
    partitions: int  # the region's partition count (inputs subjects are partitioned)
    durable: str = "classifier"
    fetch_batch: int = 128
    fetch_timeout_s: float = 0.5
    in_flight: int = 512  # content messages being scored/published at once
    max_attempts: int = 5  # deliveries before a retryable failure becomes a dead letter
    retry_delay_s: float = 0.5
    ack_wait_s: float = 30.0
    publish_timeout_s: float = 5.0
    responder_in_flight: int = 1024  # classify requests being served at once
    reply_margin_s: float = 0.001  # time kept back to send the reply itself
    streams: StreamSettings = field(default_factory=StreamSettings)


@dataclass
class ServiceStats:
    scored: int = 0
    published: int = 0
    shadow_failures: int = 0
    retried: int = 0
    dead_lettered: int = 0
    classify_replies: int = 0
    classify_errors: dict[str, int] = field(default_factory=dict)
