"""The tamper-evident record: each account's events chain by keyed hash.

Every stored event holds ``chain = BLAKE2b-256 keyed MAC(key, previous chain || the event's
stored fields || its stored body bytes)`` (keyed BLAKE2b: a MAC, at half HMAC-SHA256's cost on
the store's write path); the first event (or the first written after chaining began)
starts from 32 zero bytes. Changing, removing or reordering any stored event breaks every link
after it, and without the region's chain key (held by the application, not the database)
nobody who can only write the database can forge a consistent chain. :func:`first_break` says
where a history stops being the one that was written.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored event as the store holds it (the body as stored bytes)."""

    account_id: str
    version: int
    region: str
    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    causation_id: str
    correlation_id: str
    policy_version: str | None
    body: bytes
    chain: bytes | None  # None: written before the store chained events


def micros(at: datetime) -> int:
    since = at - _EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def link(key: bytes, previous: bytes, row: ChainRow) -> bytes:
    return link_values(key, previous, row.account_id, row.version, row.region, row.event_id,
                       row.type, row.schema_version, row.occurred_at, row.causation_id,
                       row.correlation_id, row.policy_version, row.body)


def link_values(key: bytes, previous: bytes, account_id: str, version: int, region: str,
                event_id: str, type_: str, schema_version: int, occurred_at: datetime,
                causation_id: str, correlation_id: str, policy_version: str | None,
                body: bytes) -> bytes:
    """The chain link of one event from its stored values (the store's hot path: one
    one-shot HMAC, no intermediate objects)."""
    fields = "\x1f".join((account_id, str(version), region, event_id, type_,
                          str(schema_version), str(micros(occurred_at)), causation_id,
                          correlation_id, policy_version or ""))
    message = b"".join((previous, fields.encode("utf-8"), b"\x1f", body))
    return hashlib.blake2b(message, key=key, digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class ChainAnchor:
    """Where an account's history starts once retention truncated its oldest events: the first
    kept version, the chain link of the last removed event (the kept ones continue from it),
    and a MAC over them under the region's chain key (:func:`anchor_mac`)."""

    account_id: str
    retained_from: int
    previous_chain: bytes
    events_removed: int
    truncated_at: datetime
    mac: bytes


def anchor_mac(key: bytes, account_id: str, retained_from: int, previous_chain: bytes,
               events_removed: int, truncated_at: datetime) -> bytes:
    fields = "\x1f".join(("anchor", account_id, str(retained_from), str(events_removed),
                          str(micros(truncated_at))))
    return hashlib.blake2b(b"".join((fields.encode("utf-8"), b"\x1f", previous_chain)),
                           key=key, digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    account_id: str
    events: int
    unchained: int  # events written before chaining began
    first_break: int | None  # the version where the history stops matching its chain
    why: str = ""
    retained_from: int = 1  # the first stored version (retention truncated those before it)


def verify(keys: bytes | Sequence[bytes], account_id: str,
           rows: Sequence[ChainRow], anchor: ChainAnchor | None = None) -> ChainReport:
    """Check an account's stored events (in version order) against their chain. ``keys``: the
    region's chain keys, newest first; a link made under any of them holds (keys rotate: new
    events are chained under the newest, older ones still verify under the key they were
    written with). ``anchor``: where retention left the history starting; its MAC must hold
    under one of the keys, and the kept events continue its chain link."""
    ring = (keys,) if isinstance(keys, bytes) else tuple(keys)
    previous = GENESIS
    unchained = 0
    start = 1
    if anchor is not None:
        start, previous = anchor.retained_from, anchor.previous_chain
        if anchor.account_id != account_id or not any(hmac.compare_digest(anchor_mac(
                key, account_id, anchor.retained_from, anchor.previous_chain,
                anchor.events_removed, anchor.truncated_at), anchor.mac) for key in ring):
            return ChainReport(account_id, len(rows), 0, start,
                               "the retention anchor was not written under this region's key",
                               start)
    for expected, row in enumerate(rows, start=start):
        if row.version != expected:
            return ChainReport(account_id, len(rows), unchained, expected,
                               f"version {expected} is missing (found {row.version})", start)
        if row.chain is None:
            if previous != GENESIS:
                return ChainReport(account_id, len(rows), unchained, row.version,
                                   "an unchained event after chained ones", start)
            unchained += 1
            continue
        if not any(hmac.compare_digest(link(key, previous, row), row.chain) for key in ring):
            return ChainReport(account_id, len(rows), unchained, row.version,
                               "the event or an earlier one was changed", start)
        previous = row.chain
    return ChainReport(account_id, len(rows), unchained, None, retained_from=start)
