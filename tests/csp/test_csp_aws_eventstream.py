"""AWS event-stream framing: what the gate writes, botocore (the SDK's decoder) reads; what it
reads, it reads in any split; a changed byte is a typed error, never a wrong frame."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anthropic.lib.bedrock._stream_decoder import AWSEventStreamDecoder
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from safeguards.adapters.csp.aws_eventstream import (
    FrameDecoder,
    MalformedFrame,
    chunk_event,
    chunk_frame,
    encode_frame,
    exception_frame,
)
from safeguards.adapters.csp.bedrock_api import EventStreamScanner
from safeguards.adapters.csp.upstream_client import UpstreamProtocolError

EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " you"}},
]
STREAM = b"".join(chunk_frame(e) for e in EVENTS)


def test_botocore_reads_what_the_gate_writes() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM + exception_frame("modelStreamErrorException", "cut off"))
    messages = list(buffer)
    assert [m.headers[":message-type"] for m in messages] == ["event"] * 4 + ["exception"]
    assert messages[-1].headers[":exception-type"] == "modelStreamErrorException"
    assert json.loads(messages[-1].payload) == {"message": "cut off"}
    assert [chunk_event(f) for f in FrameDecoder().feed(STREAM)] == EVENTS


@given(st.lists(st.integers(0, len(STREAM)), max_size=6))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    decoder = FrameDecoder()
    bounds = [0, *sorted(cuts), len(STREAM)]
    frames = [f for a, b in itertools.pairwise(bounds)
              for f in decoder.feed(STREAM[a:b])]
    assert b"".join(f.raw for f in frames) == STREAM and decoder.pending == b""
    assert [chunk_event(f) for f in frames] == EVENTS


@given(st.integers(0, len(STREAM) - 1), st.integers(1, 255))
def test_a_changed_byte_is_a_typed_error(at: int, flip: int) -> None:
    damaged = bytearray(STREAM)
    damaged[at] ^= flip
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(bytes(damaged))


def test_header_types_and_bad_lengths() -> None:
    frame = encode_frame([(":event-type", "chunk"), ("x-name", "ü")], b"{}")
    (decoded,) = FrameDecoder().feed(frame)
    assert decoded.headers == {":event-type": "chunk", "x-name": "ü"} and decoded.payload == b"{}"
    with pytest.raises(MalformedFrame):  # a chunk whose payload is not base64 JSON
        chunk_event(FrameDecoder().feed(encode_frame(
            [(":event-type", "chunk"), (":message-type", "event")], b'{"bytes": "!!"}'))[0])


def test_a_stopped_stream_reads_as_a_refusal_to_the_sdk() -> None:
    scanner = EventStreamScanner()
    seen = scanner.feed(STREAM[:50])
    seen += scanner.feed(STREAM[50:])
    assert [added for _, added in seen] == [0, 0, 5, 4]
    assert scanner.completion() == "héllo you" and scanner.input_tokens == 7
    tail = scanner.refusal_events()

    async def frames() -> list[dict[str, object]]:
        async def source() -> AsyncIterator[bytes]:
            yield STREAM + tail
        return [json.loads(e.data) async for e in AWSEventStreamDecoder().aiter_bytes(source())]

    events = anyio.run(frames)
    assert [e["type"] for e in events[4:]] == ["content_block_stop", "message_delta",
                                               "message_stop"]
    assert events[5]["delta"] == {"stop_reason": "refusal", "stop_sequence": None}
    with pytest.raises(UpstreamProtocolError):
        EventStreamScanner().feed(b"\x00\x00\x00\x10" + b"\x00" * 12)
