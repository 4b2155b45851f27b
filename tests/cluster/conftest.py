from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A plain client of the test NATS server."""
    client = await nats.connect(nats_url)
    yield client
    await client.drain()
