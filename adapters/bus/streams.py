"""Idempotent provisioning of one region's JetStream streams.

Running it twice, or on several nodes at once, converges on the same streams. A stream that
already exists is adopted: ours (inputs, enforcement, dead letters) are updated to the wanted
config where JetStream allows it; the content stream is shared with the classifier adapter, which
provisions it with the same config, so an existing one is accepted as it is.

Replicas follow the servers: on a JetStream cluster every stream (and KV bucket) is R3, on a
single server R1 (``cluster_replicas``), unless ``StreamSettings.replicas`` says otherwise. An
existing stream with fewer replicas than wanted is updated (JetStream moves it to more servers);
one with more is left alone (a server that is away does not shrink a stream). Calls that fail
while the cluster elects a leader are retried (``jetstream_retry``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from safeguards.adapters.bus.batch_bucket import provision_batch_bucket
from safeguards.adapters.bus.errors import ProvisioningConflict
from safeguards.adapters.bus.jetstream_retry import retry_transient
from safeguards.adapters.bus.nonce_bucket import provision_nonce_bucket
from safeguards.core.ids import validate_region
from safeguards.core.subjects import stream_name

log = logging.getLogger(__name__)

STREAM_NAME_IN_USE = 10058
API_TIMEOUT_S = 5.0
PROVISION_DEADLINE_S = 60.0  # rides through a leader election, or a server's restart
CLUSTER_REPLICAS = 3


def cluster_replicas(js: JetStreamContext) -> int:
    """How many replicas the servers behind ``js`` give a stream: 3 on a cluster (fewer if the
    cluster has fewer servers), 1 on a single server (which refuses more)."""
    nc: Any = getattr(js, "_nc", None)
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    servers = len(info.get("connect_urls") or ()) or CLUSTER_REPLICAS
    return max(1, min(CLUSTER_REPLICAS, servers))


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Retention of a region's streams; the defaults suit one machine and the tests."""

    inputs_max_age_s: float = 7 * 86400.0  # until processed, plus a wide margin for replays
    duplicate_window_s: float = 120.0  # Nats-Msg-Id dedup of re-published signals and commands
    content_max_age_s: float = 10 * 60.0  # raw text lives minutes, never longer
    dlq_max_age_s: float = 14 * 86400.0
    replicas: int | None = None  # None: follow the servers (R3 on a cluster, R1 on one server)
    batch_ledger_max_bytes: int | None = None  # the batch ledger's bound (None: its max age)


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
    # allow_direct: a partition whose consumer lost its leader reads from any replica meanwhile
    # (``direct_reads``)
    return _config(region, "INPUTS", "acct", f"signals for the account actors of region {region}",
                   s, max_age=s.inputs_max_age_s, allow_direct=True)


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
                        adopt_existing: bool = False,
                        replicas: int | None = None) -> api.StreamInfo:
    """Create ``config``'s stream, or converge an existing one on it.

    ``adopt_existing`` accepts a stream someone else provisioned (the shared content stream) as
    long as it captures the same subjects. ``replicas``: the wanted replica count (None: the
    config's own, else what the servers give, ``cluster_replicas``).
    """
    assert config.name is not None
    want = replicas or config.num_replicas or cluster_replicas(js)
    config = dataclasses.replace(config, num_replicas=want)
    return await retry_transient(lambda: _ensure_once(js, config, adopt_existing),
                                 f"provisioning stream {config.name}",
                                 deadline_s=PROVISION_DEADLINE_S, attempt_s=API_TIMEOUT_S)


async def _ensure_once(js: JetStreamContext, config: api.StreamConfig,
                       adopt_existing: bool) -> api.StreamInfo:
    assert config.name is not None
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
    if _same(info.config, config) or (adopt_existing and _replicated(info.config, config)):
        return info
    if adopt_existing:  # someone else's: only its replica count is ours to raise
        config = dataclasses.replace(info.config, num_replicas=config.num_replicas)
    try:
        updated: api.StreamInfo = await js.update_stream(config)
        return updated
    except APIError as exc:
        if exc.code == 503 or exc.err_code in (10008, 10023):
            raise  # the cluster is electing or a server is away: worth another try
        raise ProvisioningConflict(
            f"stream {config.name} exists and cannot be updated: {exc.description}"
        ) from None


def _replicated(have: api.StreamConfig, want: api.StreamConfig) -> bool:
    """A stream at least as replicated as wanted (more is left: a server being away must not
    shrink it)."""
    return (have.num_replicas or 1) >= (want.num_replicas or 1)


def _same(have: api.StreamConfig, want: api.StreamConfig) -> bool:
    def f(x: float | None) -> float:
        return round(x or 0.0, 3)

    return (
        have.retention == want.retention
        and f(have.max_age) == f(want.max_age)
        and f(have.duplicate_window) == f(want.duplicate_window)
        and (have.max_msgs_per_subject or -1) == (want.max_msgs_per_subject or -1)
        and bool(have.allow_direct) == bool(want.allow_direct)
        and _replicated(have, want)
    )


async def provision_region(js: JetStreamContext, region: str,
                           settings: StreamSettings | None = None) -> None:
    """All four streams of ``region``, its caller-assertion nonce ledger (``nonce_bucket``) and
    its batch ledger (``batch_bucket``); safe to call from every node at every start."""
    region = validate_region(region)
    s = settings or StreamSettings()
    replicas = s.replicas or cluster_replicas(js)
    await ensure_stream(js, inputs_config(region, s), replicas=replicas)
    await ensure_stream(js, enforce_config(region, s), replicas=replicas)
    await ensure_stream(js, dlq_config(region, s), replicas=replicas)
    await ensure_stream(js, content_config(region, s), adopt_existing=True, replicas=replicas)
    await provision_nonce_bucket(js, region, replicas)
    await provision_batch_bucket(js, region, replicas, s.batch_ledger_max_bytes)
    log.info("provisioned the streams of region %s (R%d)", region, replicas)
