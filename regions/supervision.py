"""A region process supervises its parts: a part that crashes (an actor node, the classifier
service) is logged with its traceback, counted and started again after a backoff, while the
region's other parts keep serving; one part's bug never takes the region's process down.

A part is anything made fresh by a factory and run with ``await tg.start(part.run)``; it is
restarted until the supervisor is told to stop, and a part that stops by itself (asked to) is
not restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger(__name__)


class Part(Protocol):
    async def run(self, *, task_status: TaskStatus[None] = ...) -> None: ...


class Supervisor:
    def __init__(self, region: str, *, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 healthy_after_s: float = 60.0) -> None:
        self.region = region
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s  # a run this long resets the backoff
        self.restarts: dict[str, int] = {}
        self._stop = anyio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def keep_running(self, name: str, make: Callable[[], Part], *,
                           task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run ``make()``'s part; started once its first incarnation has started. A crash
        before that start is retried too (the region waits for it rather than failing)."""
        started = False
        delay = self.backoff_s
        while not self._stop.is_set():
            part = make()
            began = anyio.current_time()
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(part.run)
                    if not started:
                        started = True
                        task_status.started()
                return  # it stopped because it was asked to
            except Exception as exc:
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if anyio.current_time() - began >= self.healthy_after_s:
                    delay = self.backoff_s
                log.error("region %s: %s crashed (restart %d, in %.1f s)", self.region, name,
                          self.restarts[name], delay, exc_info=exc)
            with anyio.move_on_after(delay):
                await self._stop.wait()
            delay = min(delay * 2, self.backoff_max_s)
        if not started:
            task_status.started()
