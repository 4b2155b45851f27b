"""Which JetStream failures are retried: a publish that finds no stream yet (no responders, as
right after a stream is made on a cluster) is retried until the stream answers."""

from __future__ import annotations

import uuid

import anyio
from nats.aio.client import Client
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from safeguards.adapters.bus.jetstream_retry import is_transient, retry_transient


async def test_a_publish_with_no_stream_responding_is_retried_until_it_answers(
        nc: Client) -> None:
    js = nc.jetstream(timeout=2)
    name = "R" + uuid.uuid4().hex[:8]
    subject = f"{name}.in"
    try:
        await js.publish(subject, b"early")
    except NoStreamResponseError as exc:  # the real server's answer: nothing listens yet
        assert is_transient(exc)
    else:
        raise AssertionError("a publish with no stream was acknowledged")
    assert not is_transient(APIError(code=400, err_code=10058, description="stream name in use"))

    acks: list[PubAck] = []

    async def publish() -> None:
        acks.append(await retry_transient(lambda: js.publish(subject, b"kept"),
                                          f"publishing to {subject}", deadline_s=15))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            await anyio.sleep(0.5)  # the publisher is retrying against no stream
            assert acks == []
            await js.add_stream(name=name, subjects=[f"{name}.>"])
        assert [ack.seq for ack in acks] == [1]
        assert (await js.get_last_msg(name, subject)).data == b"kept"
    finally:
        await js.delete_stream(name)
