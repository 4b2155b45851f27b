"""A worker process for the shared rate-limit tests: spends one account's quota from the
shared table (a module of its own, so a spawned process imports nothing else)."""

from __future__ import annotations

import time
from typing import Any

from safeguards.adapters.csp.shared_rates import SharedRates


def spend(handle: tuple[str, list[Any]], account: str, attempts: int, out: Any) -> None:
    rates = SharedRates.attach(handle)
    try:
        now = time.time()
        out.put(sum(rates.take(account, now, 6.0) is None for _ in range(attempts)))
    finally:
        rates.close()
