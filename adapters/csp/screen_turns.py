"""Per-account turns at the screening classifier: one account's burst cannot crowd out screening.

Screening (fresh and L0 accounts) waits a short deadline for the shared classifier and fails
open. Without turns, a dozen screenings fired at once by one account mostly miss it (on 2 CPU
cores one costs ~10 ms) and are served unscreened, and other accounts' screenings queue behind
them on the classifier and fail open too. With turns, an account has one screening at the
classifier at a time; its further screenings wait their turn in arrival order (``anyio.Lock``:
FIFO, ownership handed to the next waiter, a cancelled waiter leaves the queue) at most
``wait_s``, then each gets its own full deadline. Different accounts never wait on each other.

State is bounded: an account has an entry only while it has a screening waiting or in flight
(removed by the last one out), and at most ``max_waiting`` of its requests wait; one more is not
queued (``screen_account_queue_full``). A request that waited past ``wait_s`` gives up its place
(``screen_account_queue``). Both are fail-open causes the gate counts like the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

QUEUE_WAIT = "screen_account_queue"  # waited past the bound for the account's turn
QUEUE_FULL = "screen_account_queue_full"  # the account already had its cap of waiters


@dataclass(slots=True)
class _Turns:
    lock: anyio.Lock = field(default_factory=lambda: anyio.Lock(fast_acquire=True))
    present: int = 0  # the account's screenings in flight (0 or 1) and waiting


class ScreenTurns:
    def __init__(self) -> None:
        self._accounts: dict[str, _Turns] = {}
        self.waited_s_max = 0.0  # the longest wait for a turn so far (benchmarks read it)

    def __len__(self) -> int:
        """Accounts with a screening waiting or in flight."""
        return len(self._accounts)

    def waiting(self, account: str) -> int:
        """The account's screenings waiting for their turn (not the one in flight)."""
        turns = self._accounts.get(account)
        return 0 if turns is None else turns.present - (1 if turns.lock.locked() else 0)

    @contextlib.asynccontextmanager
    async def turn(self, account: str, wait_s: float, max_waiting: int) -> AsyncIterator[str]:
        """Yields ``""`` while it is ``account``'s turn at the classifier (for the whole block),
        or the fail-open cause when it got none (the block must then not call the classifier).
        ``wait_s`` 0: no turns, always ``""`` at once."""
        if wait_s <= 0:
            yield ""
            return
        turns = self._accounts.get(account)
        if turns is None:
            turns = self._accounts[account] = _Turns()
        elif self.waiting(account) >= max_waiting:
            yield QUEUE_FULL
            return
        turns.present += 1
        try:
            started = anyio.current_time()
            acquired = False
            with anyio.move_on_after(wait_s):
                await turns.lock.acquire()
                acquired = True
            self.waited_s_max = max(self.waited_s_max, anyio.current_time() - started)
            if not acquired:
                yield QUEUE_WAIT
                return
            try:
                yield ""
            finally:
                turns.lock.release()
        finally:
            turns.present -= 1
            if turns.present == 0:
                del self._accounts[account]
