"""Home regions: every account has exactly one, and one history there (pure rules).

Each region keeps a directory of the accounts homed in it (``adapters.bus.homes``): an entry
says the home region, that region's partition count (so another region's gate addresses the
home's input subjects correctly) and how the home was set:

- ``onboarding``: the CSP's onboarding signal named the region (``safeguards ops home set``);
- ``first_use``: no region's directory knew the account when a gate first served it, so that
  gate's region claimed it (atomic creates: first of the account's key in the global home
  register, so two regions cannot both claim, then in the region's directory);
- ``migration``: an operator moved the account (``safeguards ops migrate-home``).

A gate serving an account homed elsewhere classifies locally (the text never leaves the
serving region) and forwards only what the home may hold: the request's metadata signal and the
classifier's scores (:data:`FORWARDABLE`), signed with the pair's forwarding key. The home's
actors decide and the home's enforcement applies at every gate. A home region's nodes accept a
forwarded signal only of those kinds (:func:`forwarded_problem`): no operator action, no free
text, crosses with a forwarding key.

Directory keys are digests of the account id (:func:`directory_key`), so listing a directory
names no account.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from safeguards.core.errors import InvalidInput, InvalidRegion
from safeguards.core.events import RequestObserved, ScoreRecorded, Signal
from safeguards.core.ids import validate_account_id, validate_region

HomeSetBy = Literal["onboarding", "first_use", "migration"]
SET_BY: tuple[HomeSetBy, ...] = ("onboarding", "first_use", "migration")
FORWARDABLE = (RequestObserved, ScoreRecorded)
MAX_ENTRY_BYTES = 512


class MalformedHomeEntry(InvalidInput):
    """A directory value that is not an entry this build writes."""


@dataclass(frozen=True, slots=True)
class HomeEntry:
    home: str  # the account's home region
    partitions: int  # the home region's partition count
    set_by: HomeSetBy
    since: str  # ISO time the entry was written (the writer's clock)

    def __post_init__(self) -> None:
        validate_region(self.home)
        if not 1 <= self.partitions <= 4096:
            raise MalformedHomeEntry("home entry: partitions out of range")
        if self.set_by not in SET_BY:
            raise MalformedHomeEntry("home entry: unknown set_by")
        if not isinstance(self.since, str) or len(self.since) > 40:
            raise MalformedHomeEntry("home entry: bad time")


def directory_key(account_id: str) -> str:
    """The account's key in every region's directory (a NATS KV key: ``[A-Za-z0-9_=-]``)."""
    digest = hashlib.sha256(b"safeguards home v1\x1f" + validate_account_id(account_id).encode())
    return "h" + digest.hexdigest()[:40]


def encode_entry(entry: HomeEntry) -> bytes:
    return json.dumps({"home": entry.home, "partitions": entry.partitions,
                       "set_by": entry.set_by, "since": entry.since},
                      sort_keys=True).encode("ascii")


def decode_entry(data: bytes) -> HomeEntry:
    """The entry ``data`` holds; :class:`MalformedHomeEntry` for anything else (the directory
    is written by other processes: never trusted blindly)."""
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedHomeEntry("home entry: too large")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedHomeEntry("home entry: not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"home", "partitions", "set_by", "since"}:
        raise MalformedHomeEntry("home entry: unexpected fields")
    home, partitions, set_by, since = doc["home"], doc["partitions"], doc["set_by"], doc["since"]
    if not isinstance(home, str) or type(partitions) is not int or set_by not in SET_BY:
        raise MalformedHomeEntry("home entry: wrong field types")
    try:
        return HomeEntry(home, partitions, set_by, since)
    except InvalidRegion:
        raise MalformedHomeEntry("home entry: bad region") from None


def forwarded_problem(signal: Signal, serving_region: str | None = None) -> str | None:
    """None when another region may forward ``signal`` to its account's home, else why not:
    only request metadata and scores cross, and never for an aggregate of another region's
    (the serving region's own organisations and keys stay its own)."""
    if not isinstance(signal.observation, FORWARDABLE):
        kind = type(signal.observation).__name__ if signal.observation is not None else "tick"
        return f"a forwarded signal may carry only request metadata or scores, not {kind}"
    if serving_region is not None and signal.region == serving_region:
        return "a region does not forward to itself"
    return None
