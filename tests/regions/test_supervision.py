"""A region process keeps serving through a part's crash: the part restarts with backoff, counted,
and a part asked to stop is not restarted."""

from __future__ import annotations

import functools

import anyio
import pytest
from anyio.abc import TaskStatus

from safeguards.regions.supervision import Supervisor


class Flaky:
    """A part that crashes after starting, ``crashes`` times across its incarnations."""

    made = 0
    crashes = 2

    def __init__(self) -> None:
        Flaky.made += 1
        self.stop = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if Flaky.crashes:
            Flaky.crashes -= 1
            raise RuntimeError("a bug in the part")
        await self.stop.wait()


async def test_a_crashed_part_restarts_with_backoff_and_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    Flaky.made, Flaky.crashes = 0, 2
    parts: list[Flaky] = []

    def make() -> Flaky:
        parts.append(Flaky())
        return parts[-1]

    supervisor = Supervisor("eu", backoff_s=0.01, backoff_max_s=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(supervisor.keep_running, "node 0", make))
        with anyio.fail_after(5):
            while Flaky.made < 3:  # noqa: ASYNC110 (polled: the parts have no event for it)
                await anyio.sleep(0.01)
        assert supervisor.restarts == {"node 0": 2}
        supervisor.request_stop()
        parts[-1].stop.set()  # asked to stop: it returns and is not made again
    assert Flaky.made == 3
    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)  # with tracebacks


async def test_a_part_that_cannot_start_is_retried_until_it_does() -> None:
    attempts = 0

    class SlowToStart:
        async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                      ) -> None:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise OSError("its server is not there yet")
            task_status.started()
            await anyio.sleep_forever()

    supervisor = Supervisor("us", backoff_s=0.01)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):
            await tg.start(functools.partial(supervisor.keep_running, "classifier",
                                             SlowToStart))
        assert attempts == 3 and supervisor.restarts == {"classifier": 2}
        tg.cancel_scope.cancel()
