"""Waiting between tries of a store that is down, and saying so without a flood of log lines.

A store outage is retried often: the wait doubles from ``first_s`` but stays below ``max_s``, so a
restarted PostgreSQL is used again within ``max_s`` of accepting connections. With a 2 s cap the
tries had drifted 2 s apart while it was down and the first commit came 2 s after it was back
(cluster_faults' postgres fault: 3.03 s from its start, 1.14 s of it PostgreSQL's own crash
recovery); with 0.5 s, 0.1-1.1 s after (1.8-3.7 s from its start). A node's tries are one call per
partition and one group commit, so a short wait puts no load worth the name on a server that is
down. Each wait is drawn between half of it and all of it, so the partitions and the nodes do not
knock in step.

A try is cheap; a log line per try is not (every partition of every node, a few times a second):
the first failure of a spell is logged, then one line every ``log_every_s`` with how many tries
failed meanwhile, and one when the store answers again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable


class StoreBackoff:
    def __init__(self, first_s: float, max_s: float, *, log_every_s: float = 10.0,
                 rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first_s, self.max_s, self.log_every_s = first_s, max_s, log_every_s
        self._rng, self._clock = rng, clock
        self._delay = first_s
        self._failures = 0  # in this spell
        self._unlogged = 0  # failures since the last line
        self._since = 0.0  # the spell's first failure
        self._logged_at = 0.0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(self) -> float:
        """One more failed try: the wait before the next (jittered, at most ``max_s``)."""
        now = self._clock()
        if not self._failures:
            self._since = now
        self._failures += 1
        self._unlogged += 1
        delay = min(self._delay, self.max_s)
        self._delay = min(self._delay * 2, self.max_s)
        return delay * (0.5 + 0.5 * self._rng())

    def log_failure(self, log: logging.Logger, what: str, *args: object) -> None:
        """Log the failure just counted when it begins a spell or ``log_every_s`` has passed
        since the last line; ``what`` (with ``args``) names what failed."""
        now = self._clock()
        if self._failures == 1:
            log.warning(what + "; retrying every %.2f s at most, quiet for %.0f s",
                        *args, self.max_s, self.log_every_s)
        elif now - self._logged_at >= self.log_every_s:
            log.warning(what + "; %d tries failed in the last %.0f s (down for %.0f s)",
                        *args, self._unlogged, now - self._logged_at, now - self._since)
        else:
            log.debug(what, *args)
            return
        self._logged_at, self._unlogged = now, 0

    def succeeded(self, log: logging.Logger, what: str, *args: object) -> bool:
        """The store answered: the next failure starts a new spell from ``first_s``. True when
        this ends a spell of failures."""
        ended = self._failures > 0
        if ended:
            log.info(what + " again after %d failed tries over %.1f s", *args,
                     self._failures, self._clock() - self._since)
        self._failures = self._unlogged = 0
        self._delay = self.first_s
        return ended
