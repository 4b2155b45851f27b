"""The gate's NATS connection: established in the background, never awaited by a request.

A proxy must start and serve while NATS is down, so the connection is made (and re-made, if the
first attempt fails) by a task; until it exists the enforcement cache is stale and telemetry is
counted as unsent. After that nats-py reconnects on its own.
"""

from __future__ import annotations

import logging

import anyio
import nats
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.nats_auth import NatsIdentity
from safeguards.adapters.bus.policy_board import PolicyBoard, follow_policy
from safeguards.adapters.csp.gate import Gate

log = logging.getLogger(__name__)


class BusLink:
    def __init__(self, url: str, *, name: str = "safeguards-csp",
                 connect_timeout_s: float = 2.0, retry_s: float = 0.5,
                 identity: NatsIdentity | None = None) -> None:
        self.url = url
        self.name = name
        self.identity = identity  # the region's gate role (``nats_auth``); None: anonymous
        self.connect_timeout_s = connect_timeout_s
        self.retry_s = retry_s
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.connected = anyio.Event()
        self.connect_failures = 0
        self.errors = 0
        self._closing = False

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def policy_board(self, region: str) -> PolicyBoard | None:
        """The region's policy board, or None while there is no connection."""
        if self.js is None or not self.is_connected:
            return None
        return await PolicyBoard.open(self.js, region, provision=False)

    async def follow_policy(self, region: str, gate: Gate) -> None:
        """Keep ``gate`` on the policy the region's board shows (a front end's follower)."""
        await follow_policy(lambda: self.policy_board(region), region,
                            lambda policy, _: gate.set_policy(policy))

    async def _on_error(self, exc: Exception) -> None:
        """nats-py reports here connection errors and anything a subscription callback raised;
        both are counted, and a callback's exception is logged with its traceback."""
        self.errors += 1
        if isinstance(exc, OSError | TimeoutError | nats.errors.Error):
            log.warning("nats connection error: %s", type(exc).__name__)
        else:
            log.error("nats callback failed", exc_info=exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        log.warning("nats disconnected; reconnecting in the background")

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while self.nc is None:
                try:
                    nc = await connect(self.url, name=self.name,
                                       timeout_s=self.connect_timeout_s + 1.0,
                                       connect_timeout_s=self.connect_timeout_s,
                                       error_cb=self._on_error,
                                       disconnected_cb=self._on_disconnected,
                                       reconnected_cb=self._on_reconnected,
                                       identity=self.identity)
                except BusUnavailable as exc:
                    if self.connect_failures % 20 == 0:  # once, then every 20th: no flood
                        log.warning("nats connect to the gate's bus failed (%s); retrying",
                                    type(exc).__name__)
                    self.connect_failures += 1
                    await anyio.sleep(self.retry_s)
                    continue
                self.nc = nc
                self.js = nc.jetstream()
                self.connected.set()
            await anyio.sleep_forever()
        finally:
            self._closing = True
            nc_, self.nc, self.js = self.nc, None, None
            if nc_ is not None:
                with anyio.move_on_after(2.0, shield=True):
                    await nc_.close()
