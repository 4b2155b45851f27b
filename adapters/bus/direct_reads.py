"""Reading a partition's signals straight from the inputs stream while its consumer has no leader.

A partition's durable consumer is a Raft group of its own. When the server leading it dies, the
other two wait out nats-server's election timeout (a random 4 to 9 s after the last heartbeat,
not configurable) before one takes over, and the partition takes nothing in meanwhile, although
the stream itself may be fine (its leader elsewhere). JetStream's direct get (the inputs stream
has ``allow_direct``) is served by every current replica, followers included, and needs no
consumer: ``PartitionConsumer`` reads what follows the last message it was delivered through it
until the consumer answers again.

What is read this way is never acked (no consumer delivered it): the consumer delivers it again
once it has a leader, and the inbox (PostgreSQL, the final fence) answers "duplicate", so the
second delivery is acked and changes nothing. Nothing is lost either: the consumer still holds
every message until it is acked through it.
"""

from __future__ import annotations

import json

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from safeguards.core.bus import BusUnavailable

# what a direct get adds to the stored message's own headers (a consumer's delivery has none)
_ADDED = frozenset({"Nats-Stream", "Nats-Sequence", "Nats-Subject", "Nats-Time-Stamp",
                    "Nats-Num-Pending", "Nats-Last-Sequence", "Nats-UpTo-Sequence", "Status",
                    "Description"})
END_OF_BATCH = "204"


class DirectRead:
    """One stored message read by direct get, as the bus port's ``InboundMessage``. Acking,
    naking and keeping it alive do nothing: no consumer delivered it, and the partition's
    consumer delivers it again later, which the inbox recognises."""

    __slots__ = ("_headers", "data", "sequence", "stream", "subject")

    def __init__(self, stream: str, msg: Msg) -> None:
        headers = msg.headers or {}
        self.stream = stream
        self.subject = headers["Nats-Subject"]
        self.sequence = int(headers["Nats-Sequence"])
        self.data = msg.data
        self._headers = {k: v for k, v in headers.items() if k not in _ADDED}

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    @property
    def deliveries(self) -> int:
        return 1  # never counts towards the consumer's max deliveries: it is not one of them

    async def ack(self) -> None:
        return None

    async def nak(self, delay: float | None = None) -> None:
        return None

    async def term(self) -> None:
        return None

    async def in_progress(self) -> None:
        return None


async def read_direct(nc: Client, stream: str, subject_filter: str, from_seq: int, batch: int,
                      timeout_s: float) -> list[DirectRead]:
    """Up to ``batch`` messages of ``stream`` on ``subject_filter`` from sequence ``from_seq``
    on, in stream order, from whichever replica answers (one batched direct get). An empty list
    when there are none; ``BusUnavailable`` when no replica answered within ``timeout_s`` (a
    paused one may have taken the request: the next try likely goes to another)."""
    out: list[DirectRead] = []
    done = anyio.Event()
    failed: list[str] = []

    async def on_reply(msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            out.append(DirectRead(stream, msg))
            return
        if status not in (END_OF_BATCH, "404"):  # 404: nothing at or after from_seq
            failed.append(status)
        done.set()

    request = json.dumps({"seq": from_seq, "next_by_subj": subject_filter,
                          "batch": batch}).encode()
    inbox = nc.new_inbox()
    try:
        sub = await nc.subscribe(inbox, cb=on_reply)
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
            with anyio.move_on_after(timeout_s):
                await done.wait()
        finally:
            await sub.unsubscribe()
    except nats.errors.Error as exc:
        raise BusUnavailable(f"direct get from {stream}: {type(exc).__name__}") from None
    if not done.is_set():
        raise BusUnavailable(f"direct get from {stream}: no answer within {timeout_s}s")
    if failed:
        raise BusUnavailable(f"direct get from {stream}: status {failed[0]}")
    return out
