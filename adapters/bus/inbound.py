"""A JetStream delivery as the bus port's ``InboundMessage``: nats-py's message behind it, its
metadata parsed only when asked for, its transport errors translated to ``BusUnavailable``."""

from __future__ import annotations

from typing import Any

import nats.errors
from nats.aio.msg import Msg

from safeguards.core.bus import BusUnavailable


class JetStreamMessage:
    __slots__ = ("_meta", "msg")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self._meta: Any = None

    def _metadata(self) -> Any:
        if self._meta is None:
            self._meta = self.msg.metadata
        return self._meta

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})

    @property
    def deliveries(self) -> int:
        return int(self._metadata().num_delivered)

    @property
    def stream(self) -> str:
        return str(self._metadata().stream)

    @property
    def sequence(self) -> int:
        return int(self._metadata().sequence.stream)

    async def ack(self) -> None:
        try:
            await self.msg.ack()
        except nats.errors.Error as exc:
            raise BusUnavailable(f"ack: {type(exc).__name__}") from None

    async def nak(self, delay: float | None = None) -> None:
        try:
            await self.msg.nak(delay=delay)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"nak: {type(exc).__name__}") from None

    async def term(self) -> None:
        try:
            await self.msg.term()
        except nats.errors.Error as exc:
            raise BusUnavailable(f"term: {type(exc).__name__}") from None

    async def in_progress(self) -> None:
        try:
            await self.msg.in_progress()
        except nats.errors.Error as exc:
            raise BusUnavailable(f"in_progress: {type(exc).__name__}") from None
