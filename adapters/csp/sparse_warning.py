"""A warning about a repeated failure, logged at most once every ``every_s`` with the number of
occurrences since the last line, never once per request (the region's ledgers: a NATS outage
fails every request, and a line per request would flood the log)."""

from __future__ import annotations

import logging
import time

EVERY_S = 60.0


class SparseWarning:
    def __init__(self, log: logging.Logger, every_s: float = EVERY_S) -> None:
        self.log = log
        self.every_s = every_s
        self._unlogged = 0
        self._logged_at = -every_s

    def note(self, message: str, *args: object) -> None:
        """Counts one occurrence; logs ``message % (*args, count since the last line)`` when
        ``every_s`` has passed since the last line."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= self.every_s:
            self._logged_at = now
            self.log.warning(message, *args, self._unlogged)
            self._unlogged = 0
