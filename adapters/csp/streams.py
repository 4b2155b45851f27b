"""The streams the inline gate reads and writes, provisioned idempotently where they are missing.

The bus adapter owns stream provisioning for a running region; the gate only makes sure that a
stand-alone proxy (demos, tests, benchmarks) finds the streams it talks to. The configurations
here match the bus adapter's (same names, subjects and per-subject limits); an existing stream is
left exactly as it is.
"""

from __future__ import annotations

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from safeguards.core.subjects import stream_name

CONTENT_MAX_AGE_S = 10 * 60.0
DUPLICATE_WINDOW_S = 120.0


def gate_stream_configs(region: str) -> list[api.StreamConfig]:
    return [
        api.StreamConfig(
            name=stream_name(region, "ENFORCE"), subjects=[f"sg.{region}.enforce.>"],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
            max_msgs_per_subject=1, duplicate_window=DUPLICATE_WINDOW_S,
            discard=api.DiscardPolicy.OLD, allow_direct=True,
        ),
        api.StreamConfig(
            name=stream_name(region, "INPUTS"), subjects=[f"sg.{region}.acct.>"],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
            max_age=7 * 86400.0, duplicate_window=DUPLICATE_WINDOW_S,
            discard=api.DiscardPolicy.OLD,
        ),
        api.StreamConfig(
            name=stream_name(region, "CONTENT"), subjects=[f"sg.{region}.content.>"],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
            max_age=CONTENT_MAX_AGE_S, duplicate_window=DUPLICATE_WINDOW_S,
            discard=api.DiscardPolicy.OLD,
        ),
    ]


async def ensure_gate_streams(js: JetStreamContext, region: str) -> None:
    """Create whichever of the region's ENFORCE, INPUTS and CONTENT streams does not exist."""
    for config in gate_stream_configs(region):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
