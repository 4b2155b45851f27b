"""The streams the inline gate reads and writes, provisioned idempotently where they are missing.

The bus adapter owns stream provisioning for a running region; the gate only makes sure that a
stand-alone proxy (demos, tests, benchmarks) finds the streams it talks to, with the bus
adapter's own configurations. An existing stream is left exactly as it is.
"""

from __future__ import annotations

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from safeguards.adapters.bus.batch_bucket import batch_bucket_name, provision_batch_bucket
from safeguards.adapters.bus.nonce_bucket import nonce_bucket_name, provision_nonce_bucket
from safeguards.adapters.bus.streams import (
    StreamSettings,
    content_config,
    enforce_config,
    inputs_config,
)


def gate_stream_configs(region: str) -> list[api.StreamConfig]:
    settings = StreamSettings()
    return [enforce_config(region, settings), inputs_config(region, settings),
            content_config(region, settings)]


async def ensure_gate_streams(js: JetStreamContext, region: str) -> None:
    """Create whichever of the region's ENFORCE, INPUTS and CONTENT streams, its nonce
    ledger (``bus.nonce_bucket``) and its batch ledger (``bus.batch_bucket``) does not exist."""
    for config in gate_stream_configs(region):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
    try:
        await js.stream_info(f"KV_{nonce_bucket_name(region)}")
    except NotFoundError:
        await provision_nonce_bucket(js, region, StreamSettings().replicas)
    try:
        await js.stream_info(f"KV_{batch_bucket_name(region)}")
    except NotFoundError:
        await provision_batch_bucket(js, region, StreamSettings().replicas)
