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
    decide_errors: int = 0  # decisions that raised a coding error (logged with the traceback)
    redelivery_requested: int = 0  # naks (mailbox overflow, repeated failures, drain)
    store_failures: int = 0
    store_refused: int = 0  # appends the store refused as malformed (their signals dead-lettered)
    bus_failures: int = 0
    loads: int = 0
    activations_refused: int = 0  # optimistic activations of accounts that already had events
    passivated: int = 0
    mailbox_full: int = 0  # batches that parked signals behind a full mailbox (fetch paused)
    batches: int = 0
    commands_published: int = 0  # rows confirmed by JetStream and marked (either path)
    fast_path_overflow: int = 0  # commands left to the slow path because its queue was full
    commands_repaired: int = 0  # newest commands re-published after a broker lost them
    reconciliations: int = 0  # comparisons of the newest commands with the enforcement stream
    quarantined: int = 0  # accounts set aside because their stored history could not be read

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
