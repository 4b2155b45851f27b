"""Process-level heap tuning shared by the long-running services (actor nodes, the inline proxy).

CPython's cyclic collector pauses the whole event loop while it scans. A service process holds
two kinds of heap: what start-up built (modules, functions, settings, the loaded enforcement
cache), which lives as long as the process, and the working set (actor states, in-flight
requests), which churns and is freed by reference counting, since none of our state forms cycles.
``settle_heap`` collects once and moves the start-up heap out of every later scan
(``gc.freeze``), so a full collection only walks the working set; ``GcPauses`` records how long
the collector held the loop, for metrics and benchmarks.
"""

from __future__ import annotations

import gc
import time
from typing import Any

# Young objects allocated before a generation-0 collection. The default (700) makes the loop
# stop thousands of times a second under load; most of what a request or a signal allocates is
# freed by reference counting long before that.
GEN0_THRESHOLD = 7000


def settle_heap() -> int:
    """Collect, freeze what survives (the start-up heap) and set the service thresholds; returns
    how many objects were frozen. Call once the process has loaded what it keeps for life."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()


class GcPauses:
    """Counts collections and their pauses, per generation (installed as a ``gc`` callback)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        g = int(info["generation"])
        self.count[g] += 1
        self.total_s[g] += took
        if took > self.max_s[g]:
            self.max_s[g] = took

    def summary(self) -> dict[str, float]:
        return {"gc_collections": sum(self.count),
                "gc_pause_total_ms": round(sum(self.total_s) * 1000, 1),
                "gc_pause_max_ms": round(max(self.max_s) * 1000, 2)}
