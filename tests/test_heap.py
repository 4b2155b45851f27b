"""The services' GC tuning: the start-up heap leaves the collector's scans, pauses are counted."""

from __future__ import annotations

import gc

from safeguards.adapters.heap import GEN0_THRESHOLD, GcPauses, settle_heap


def test_settle_heap_freezes_what_exists_and_pauses_are_recorded() -> None:
    old_threshold = gc.get_threshold()
    try:
        keep = [[i] for i in range(10_000)]  # long-lived start-up state
        frozen = settle_heap()
        assert frozen >= len(keep)
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        with GcPauses() as pauses:
            cycle: list[object] = []
            cycle.append(cycle)  # garbage only the collector can free
            del cycle
            gc.collect()
        summary = pauses.summary()
        assert summary["gc_collections"] >= 1
        assert max(pauses.max_s) > 0.0 and sum(pauses.total_s) > 0.0  # its pause was timed
        assert summary["gc_pause_max_ms"] == round(max(pauses.max_s) * 1000, 2)
        assert pauses._callback not in gc.callbacks  # uninstalled on exit
    finally:
        gc.unfreeze()
        gc.set_threshold(*old_threshold)
