"""Process-level tuning shared by the long-running services (actor nodes, the inline proxy): the
heap settling and GC pause accounting live in ``adapters.heap`` (the proxy's enforcement feed
settles the heap once its cache is loaded); this module keeps the composition root's name for
them."""

from __future__ import annotations

from safeguards.adapters.heap import GEN0_THRESHOLD, GcPauses, settle_heap

__all__ = ["GEN0_THRESHOLD", "GcPauses", "settle_heap"]
