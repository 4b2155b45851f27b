"""Tunables of a node; the defaults suit one machine and the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeSettings:
    fetch_batch: int = 256  # messages pulled per fetch of one partition
    fetch_timeout_s: float = 0.5  # a fetch's wait when the partition is idle
    # After an idle spell, a commit cycle that would carry fewer than 128 appends waits this long
    # for more: fewer, larger transactions for sparse traffic, at that much latency. Under load
    # cycles run back to back and grow with the load by themselves, so it is off by default.
    commit_linger_s: float = 0.0
    # Appends in one commit cycle (one transaction), shared evenly by the node's partitions.
    commit_max_appends: int = 4096
    mailbox_capacity: int = 64  # signals one account may hold awaiting its turn
    # signals of one account decided in one commit cycle (in order, one append each): an
    # organisation hears of every member's scores, and at one a cycle it fell seconds behind
    turn_signals: int = 16
    max_conflict_retries: int = 8  # decide-again rounds for one signal within a batch
    reject_after_deliveries: int = 5  # a signal whose decision keeps failing goes to the DLQ
    passivate_after_s: float = 120.0  # an actor idle this long drops its state from memory
    # Activate an account the node has never seen on the initial state instead of reading the
    # store first: for a new account that saves the load; for an existing one the append's
    # expected version (0) is refused as a conflict, and the actor loads and decides again.
    # PostgreSQL's version check makes the guess safe; it only ever costs one extra round. A
    # partition guesses only while most first-seen accounts turned out new; otherwise (after a
    # takeover or a restart) it loads first, and the loads tell it when guessing pays again.
    optimistic_activation: bool = True
    load_batch: int = 128  # accounts whose states one store call reads (snapshots + tails)
    load_concurrency: int = 1  # such calls at once, per partition (the pool serves them all)
    store_timeout_s: float = 10.0  # deadline of one store call
    store_retry_s: float = 0.1  # first wait before retrying a failed store call (doubles)
    # at most this long between tries (each wait drawn between half and all of it): a restarted
    # PostgreSQL is used again within 0.5 s of accepting connections (with 2 s, the first append
    # came 2 s after it was back); a node's tries are one call per partition and one commit, no
    # load on a store that is down, and its log says so once per spell (``backoff``)
    store_retry_max_s: float = 0.5
    # a quarantined account's history is read again this long after its quarantine began (on
    # its next signal), so a repaired row or a finished deploy ends it without a restart
    quarantine_recheck_s: float = 60.0
    lease_ttl_s: float = 6.0  # a dead node's partitions are free this long after its last renew
    lease_renew_s: float = 1.5
    relay_poll_s: float = 0.5  # outbox rows of other nodes (or of a crashed one) wait this long
    relay_batch: int = 256
    # how often the relay compares recently changed accounts' newest commands with the
    # enforcement stream and restores what the stream lost (besides after every reconnect)
    reconcile_s: float = 15.0
    drain_timeout_s: float = 15.0
    # Fault injection only: hold acks this long after each commit cycle, so a test's kill -9 lands
    # between commit and ack (the window the inbox must cover). Zero in production.
    fault_ack_delay_s: float = 0.0
