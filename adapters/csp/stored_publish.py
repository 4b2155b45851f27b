"""One JetStream publish that waits for the stream's acknowledgement, failures named.

The batch prompts (``batch_prompts``) and the batch ledger (``batch_ledger``) both need to know
that the region's stream stored a message before they answer a caller, and both count why it did
not: the same request and the same reasons, here once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client


async def stored(nc: Client | None, subject: str, payload: bytes, timeout_s: float, *,
                 headers: Mapping[str, str] | None = None,
                 no_stream: str = "no_stream") -> str | None:
    """Publishes and waits for JetStream's acknowledgement: None once stored (or a duplicate of
    a stored message), else why not: ``disconnected``, ``no_stream`` (named by the caller: no
    stream takes the subject), ``timeout``, ``bus_error`` or ``jetstream_error`` (storage full,
    no leader, ...)."""
    if nc is None or not nc.is_connected:
        return "disconnected"
    try:
        reply = await nc.request(subject, payload, timeout=timeout_s,
                                 headers=dict(headers) if headers else None)
    except nats.errors.NoRespondersError:
        return no_stream
    except nats.errors.Error as exc:
        return "timeout" if isinstance(exc, nats.errors.TimeoutError) else "bus_error"
    try:
        answer = json.loads(reply.data)
    except ValueError:
        answer = None
    # (an error's answer may carry a seq too: 2.15 answers a failed expectation with seq 0)
    if not isinstance(answer, dict) or "error" in answer or "seq" not in answer:
        return "jetstream_error"
    return None
