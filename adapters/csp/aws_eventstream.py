"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock streams with.

Each message is a prelude (total length, headers length, both big-endian u32, then the CRC32 of
those 8 bytes), the headers, the payload, and the CRC32 of everything before it. Headers are
(name length u8, name, value type u8, value); Bedrock's own frames use only string values
(type 7: u16 length, UTF-8), and this decoder reads every type the format defines so that a
frame it did not make still parses or fails with a typed error.

Pure functions and one incremental decoder, no I/O: the proxy feeds it the upstream's bytes as
they arrive and gets back whole frames, each with the exact bytes that came in (what the client
is sent), or :class:`MalformedFrame` where a length or a CRC does not hold.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from safeguards.core.errors import InvalidInput

CONTENT_TYPE = b"application/vnd.amazon.eventstream"
MAX_FRAME_BYTES = 16 * 1024 * 1024 + 128 * 1024  # Bedrock's payload limit plus headers
_PRELUDE = struct.Struct(">II")
_STRING = 7
# value type -> fixed size (None: u16 length-prefixed)
_SIZES: dict[int, int | None] = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 6: None, 7: None, 8: 8,
                                 9: 16}


class MalformedFrame(InvalidInput):
    """Bytes that are not a valid event-stream message (a length or a CRC does not hold)."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: dict[str, str | bytes | int | bool]
    payload: bytes
    raw: bytes  # the message exactly as it came in

    @property
    def message_type(self) -> str:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else ""


def encode_frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One message with string-valued ``headers``."""
    head = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        head += bytes((len(raw_name),)) + raw_name + bytes((_STRING,))
        head += struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(head) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(head) + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    """A Bedrock ``chunk`` event carrying one Messages stream event (base64 JSON)."""
    data = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(data).decode("ascii")}).encode()
    return encode_frame([(":event-type", "chunk"), (":content-type", "application/json"),
                         (":message-type", "event")], payload)


def exception_frame(exception_type: str, message: str) -> bytes:
    """A Bedrock stream exception (``modelStreamErrorException``, ``throttlingException``...):
    the stream's last frame; the SDK raises it as an error event."""
    return encode_frame([(":exception-type", exception_type),
                         (":content-type", "application/json"),
                         (":message-type", "exception")],
                        json.dumps({"message": message}).encode())


def chunk_event(frame: Frame) -> dict[str, Any] | None:
    """The Messages event a ``chunk`` frame carries (None: another frame, or not an object)."""
    if frame.message_type != "event" or frame.headers.get(":event-type") != "chunk":
        return None
    try:
        wrapper = json.loads(frame.payload)
        data = json.loads(base64.b64decode(wrapper["bytes"], validate=True))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise MalformedFrame("a chunk frame's payload is not base64 JSON") from None
    return data if isinstance(data, dict) else None


class FrameDecoder:
    """Splits an event-stream byte stream into frames, checking both CRCs of each."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bytes:
        return self._buffer

    def feed(self, chunk: bytes) -> list[Frame]:
        buffer = self._buffer + chunk if self._buffer else chunk
        frames: list[Frame] = []
        start = 0
        while len(buffer) - start >= 12:
            total, headers_length = _PRELUDE.unpack_from(buffer, start)
            (prelude_crc,) = struct.unpack_from(">I", buffer, start + 8)
            if zlib.crc32(buffer[start:start + 8]) != prelude_crc:
                raise MalformedFrame("event-stream prelude CRC mismatch")
            if total > MAX_FRAME_BYTES or total < 16 or headers_length > total - 16:
                raise MalformedFrame(f"event-stream frame length {total} out of range")
            if len(buffer) - start < total:
                break
            raw = buffer[start:start + total]
            (message_crc,) = struct.unpack_from(">I", raw, total - 4)
            if zlib.crc32(raw[:-4]) != message_crc:
                raise MalformedFrame("event-stream message CRC mismatch")
            headers = _headers(raw[12:12 + headers_length])
            frames.append(Frame(headers, raw[12 + headers_length:total - 4], raw))
            start += total
        self._buffer = buffer[start:]
        return frames


def _headers(data: bytes) -> dict[str, str | bytes | int | bool]:
    out: dict[str, str | bytes | int | bool] = {}
    at = 0
    try:
        while at < len(data):
            name_length = data[at]
            name = data[at + 1:at + 1 + name_length].decode("utf-8")
            at += 1 + name_length
            kind = data[at]
            at += 1
            if kind not in _SIZES:
                raise MalformedFrame(f"event-stream header value type {kind} is unknown")
            size = _SIZES[kind]
            value: str | bytes | int | bool
            if size is None:
                (length,) = struct.unpack_from(">H", data, at)
                raw = data[at + 2:at + 2 + length]
                if len(raw) != length:
                    raise MalformedFrame("event-stream header value is cut short")
                value = raw.decode("utf-8") if kind == _STRING else raw
                at += 2 + length
            elif kind in (0, 1):
                value = kind == 0
            else:
                raw = data[at:at + size]
                if len(raw) != size:
                    raise MalformedFrame("event-stream header value is cut short")
                value = raw if kind == 9 else int.from_bytes(raw, "big", signed=True)
                at += size
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise MalformedFrame("event-stream headers are malformed") from None
    return out
