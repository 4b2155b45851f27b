"""Counters of one node: what it committed, deduplicated, retried and dead-lettered."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class NodeMetrics:
    received: int = 0
    committed: int = 0  # signals whose events, inbox key and outbox rows were committed
    duplicates: int = 0  # signals the inbox already held: acked, nothing written
    conflicts: int = 0  # appends that lost a version race and were decided again
    dead_lettered: int = 0
    redelivery_requested: int = 0  # naks (mailbox overflow, repeated failures, drain)
    store_failures: int = 0
    bus_failures: int = 0
    loads: int = 0
    passivated: int = 0
    batches: int = 0
    commands_published: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
