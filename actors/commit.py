"""Group commit across the partitions of a node: one store transaction per cycle.

The regional store orders its feed under one lock, so many small concurrent transactions mostly
wait for each other. Partitions submit each round's appends here; one committer task takes
everything submitted since its last cycle and appends it with one ``append_batch``. A batch the
store refuses as a whole (a malformed request: a bug, not a race) is split, so only the
partition that sent the bad request sees the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from safeguards.core.errors import ConcurrencyConflict
from safeguards.core.ports import AppendRequest, AppendResult, EventStore

Result = AppendResult | ConcurrencyConflict


@dataclass(slots=True)
class _Submission:
    requests: Sequence[AppendRequest]
    done: anyio.Event = field(default_factory=anyio.Event)
    results: list[Result] | None = None
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, store: EventStore, *, timeout_s: float, max_requests: int = 4096,
                 linger_s: float = 0.0, linger_below: int = 128) -> None:
        self.store = store
        self.linger_s = linger_s  # a small cycle waits this long for more submissions
        self.linger_below = linger_below
        self.timeout_s = timeout_s
        self.max_requests = max_requests
        self._queue: list[_Submission] = []
        self._wake = anyio.Event()
        self.cycles = 0

    async def append(self, requests: Sequence[AppendRequest]) -> list[Result]:
        """Append with the next cycle; raises what the store raised for this submission."""
        sub = _Submission(requests)
        self._queue.append(sub)
        self._wake.set()
        await sub.done.wait()
        if sub.error is not None:
            raise sub.error
        assert sub.results is not None
        return sub.results

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self.linger_s and sum(len(q.requests) for q in self._queue) < self.linger_below:
                    await anyio.sleep(self.linger_s)
                while self._queue:
                    cycle = self._take()
                    await self._commit(cycle)
        finally:
            for sub in self._queue:  # cancelled: nobody will commit these
                sub.error = anyio.get_cancelled_exc_class()()
                sub.done.set()

    def _take(self) -> list[_Submission]:
        """Submissions for one cycle: one request per account (a later request for the same
        account would be decided on a state the earlier one has not committed yet)."""
        cycle: list[_Submission] = []
        accounts: set[str] = set()
        count = 0
        rest: list[_Submission] = []
        for sub in self._queue:
            mine = {r.account_id for r in sub.requests}
            if (cycle and count + len(sub.requests) > self.max_requests) or mine & accounts \
                    or len(mine) != len(sub.requests):
                if not cycle:  # alone in its cycle, it goes as it is
                    cycle.append(sub)
                    count += len(sub.requests)
                    accounts |= mine
                else:
                    rest.append(sub)
                continue
            cycle.append(sub)
            count += len(sub.requests)
            accounts |= mine
        self._queue = rest
        return cycle

    async def _commit(self, cycle: list[_Submission]) -> None:
        self.cycles += 1
        merged = [r for sub in cycle for r in sub.requests]
        try:
            with anyio.fail_after(self.timeout_s):
                results = await self.store.append_batch(merged)
        except Exception as exc:
            if len(cycle) > 1 and not getattr(exc, "retryable", True):
                for sub in cycle:  # find the culprit: each submission on its own
                    await self._commit([sub])
                return
            for sub in cycle:
                sub.error = exc
                sub.done.set()
            return
        i = 0
        for sub in cycle:
            n = len(sub.requests)
            sub.results = results[i:i + n]
            i += n
            sub.done.set()
