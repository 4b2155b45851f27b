"""Idempotent provisioning of one region's JetStream streams.

Running it twice, or on several nodes at once, converges on the same streams. A stream that
already exists is adopted: ours (inputs, enforcement, dead letters) are updated to the wanted
config where JetStream allows it; the content stream is shared with the classifier adapter, which
provisions it with the same config, so an existing one is accepted as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from safeguards.adapters.bus.errors import BusUnavailable, ProvisioningConflict
from safeguards.core.ids import validate_region
from safeguards.core.subjects import stream_name

log = logging.getLogger(__name__)

STREAM_NAME_IN_USE = 10058
API_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Retention of a region's streams; the defaults suit one machine and the tests."""

    inputs_max_age_s: float = 7 * 86400.0  # until processed, plus a wide margin for replays
    duplicate_window_s: float = 120.0  # Nats-Msg-Id dedup of re-published signals and commands
    content_max_age_s: float = 10 * 60.0  # raw text lives minutes, never longer
    dlq_max_age_s: float = 14 * 86400.0
    replicas: int = 1  # R3 on a cluster


def _config(region: str, kind: str, subject: str, description: str, s: StreamSettings,
            **overrides: object) -> api.StreamConfig:
    """What every stream of a region shares: file storage, limits retention that drops the
    oldest, deduplication by Nats-Msg-Id, the cluster's replica count."""
    fields: dict[str, object] = {
        "name": stream_name(region, kind), "description": description,
        "subjects": [f"sg.{region}.{subject}.>"], "retention": api.RetentionPolicy.LIMITS,
        "storage": api.StorageType.FILE, "duplicate_window": s.duplicate_window_s,
        "discard": api.DiscardPolicy.OLD, "num_replicas": s.replicas,
    }
    fields.update(overrides)
    return api.StreamConfig(**fields)  # type: ignore[arg-type]


def inputs_config(region: str, s: StreamSettings) -> api.StreamConfig:
    return _config(region, "INPUTS", "acct", f"signals for the account actors of region {region}",
                   s, max_age=s.inputs_max_age_s)


def enforce_config(region: str, s: StreamSettings) -> api.StreamConfig:
    return _config(region, "ENFORCE", "enforce",
                   f"current enforcement command per account of region {region}", s,
                   max_msgs_per_subject=1,  # last value per account
                   allow_direct=True)


def content_config(region: str, s: StreamSettings) -> api.StreamConfig:
    return _config(region, "CONTENT", "content",
                   f"prompt/completion text awaiting scoring in region {region} (short TTL)", s,
                   retention=api.RetentionPolicy.WORK_QUEUE, max_age=s.content_max_age_s,
                   duplicate_window=min(s.duplicate_window_s, s.content_max_age_s))


def dlq_config(region: str, s: StreamSettings) -> api.StreamConfig:
    return _config(region, "DLQ", "dlq",
                   f"poison messages of region {region}, with their reason in headers", s,
                   max_age=s.dlq_max_age_s)


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig, *,
                        adopt_existing: bool = False) -> api.StreamInfo:
    """Create ``config``'s stream, or converge an existing one on it.

    ``adopt_existing`` accepts a stream someone else provisioned (the shared content stream) as
    long as it captures the same subjects.
    """
    assert config.name is not None
    try:
        with anyio.fail_after(API_TIMEOUT_S):
            try:
                info = await js.stream_info(config.name)
            except NotFoundError:
                try:
                    created: api.StreamInfo = await js.add_stream(config)
                    return created
                except APIError as exc:
                    if exc.err_code != STREAM_NAME_IN_USE:
                        raise
                    # Another node created it between our look and our create: adopt it.
                    info = await js.stream_info(config.name)
            if set(info.config.subjects or ()) != set(config.subjects or ()):
                raise ProvisioningConflict(
                    f"stream {config.name} exists with subjects {info.config.subjects}"
                )
            if adopt_existing or _same(info.config, config):
                return info
            try:
                updated: api.StreamInfo = await js.update_stream(config)
                return updated
            except APIError as exc:
                raise ProvisioningConflict(
                    f"stream {config.name} exists and cannot be updated: {exc.description}"
                ) from None
    except TimeoutError:
        raise BusUnavailable(f"provisioning stream {config.name}: no answer in time") from None


def _same(have: api.StreamConfig, want: api.StreamConfig) -> bool:
    def f(x: float | None) -> float:
        return round(x or 0.0, 3)

    return (
        have.retention == want.retention
        and f(have.max_age) == f(want.max_age)
        and f(have.duplicate_window) == f(want.duplicate_window)
        and (have.max_msgs_per_subject or -1) == (want.max_msgs_per_subject or -1)
    )


async def provision_region(js: JetStreamContext, region: str,
                           settings: StreamSettings | None = None) -> None:
    """All four streams of ``region``; safe to call from every node at every start."""
    region = validate_region(region)
    s = settings or StreamSettings()
    await ensure_stream(js, inputs_config(region, s))
    await ensure_stream(js, enforce_config(region, s))
    await ensure_stream(js, dlq_config(region, s))
    await ensure_stream(js, content_config(region, s), adopt_existing=True)
    log.info("provisioned the streams of region %s", region)
