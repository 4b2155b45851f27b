"""Pseudonymous cross-region signals (pure rules): what one region may tell the others about a
harmful prompt, and when.

A region learns that a prompt is harmful when its classifier flags it from several accounts.
The others may benefit (the same prompt, sent to them next, can be refused before it is
served), but nothing with an account id or text may cross. So a region publishes only an
:class:`CrossRegionAggregate`: the prompt's *pseudonym* (an HMAC of the normalised prompt,
``core.prompt_links.normalise_prompt``, under the epoch's cross-region key, which every region
derives from one shared secret and which rotates every ``EPOCH_S``: pseudonyms of different
epochs cannot be joined), the epoch, the category and how many distinct accounts flagged it,
and only once that is at least ``K_MIN`` (k-anonymity: a pseudonym never stands for one
person). :func:`residency_problem` is the guard every publisher and every receiver runs: it
refuses anything below the threshold, from another origin than the subject says, or not of
this exact shape.

On the board each aggregate travels as a *board entry* (:func:`board_entry`): the aggregate's
bytes on the first line, then one MAC per receiving region (``<region> <key id>:<hex>``) that
the origin made under the key it forwards to that region with. A receiver takes an aggregate
only where its own line holds (``bus.cross_signals``): write permission on the board alone
cannot speak for a region.

A receiving region folds them as risk for its own accounts: its gates refuse a request whose
newest user turn has a released pseudonym of the current or the previous epoch, as the home
region refuses a prompt that its own accounts sent flagged (``core.prompt_links``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass

from safeguards.core.errors import InvalidInput, InvalidRegion
from safeguards.core.ids import validate_region
from safeguards.core.prompt_links import normalise_prompt

EPOCH_S = 86_400  # pseudonyms rotate daily
K_MIN = 3  # distinct accounts before a pseudonym may leave its region
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_AGGREGATE_BYTES = 512
MAX_ENTRY_BYTES = 8192  # the aggregate and a MAC line per receiving region
_MAC = re.compile(r"[A-Za-z0-9_.-]{1,64}:[0-9a-f]{64}")


class MalformedAggregate(InvalidInput):
    """A cross-region aggregate that is not exactly what this build publishes."""


def epoch_of(unix_s: float, epoch_s: int = EPOCH_S) -> int:
    return int(unix_s // epoch_s)


def epoch_key(secret: bytes, epoch: int) -> bytes:
    """The cross-region key of one epoch (every region derives the same from the secret)."""
    return hmac.new(secret, b"safeguards cross-region epoch\x1f" + str(epoch).encode(),
                    hashlib.sha256).digest()


def pseudonym(key: bytes, text: str) -> str | None:
    """The prompt's pseudonym under an epoch's key (None for an empty prompt)."""
    normalised = normalise_prompt(text)
    return keyed_pseudonym(key, normalised) if normalised else None


def keyed_pseudonym(key: bytes, normalised: str) -> str:
    """The pseudonym of a prompt already normalised (``normalise_prompt``), for a caller that
    keys one prompt under several epochs."""
    return hmac.new(key, b"prompt\x1f" + normalised.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class CrossRegionAggregate:
    origin: str  # the region that saw it
    epoch: int
    pseudonym: str
    category: str
    accounts: int  # distinct accounts that sent it flagged there (>= K_MIN)


def residency_problem(aggregate: CrossRegionAggregate, *, k_min: int = K_MIN,
                      origin: str | None = None) -> str | None:
    """None when ``aggregate`` may cross regions, else why not. ``origin``: the region the
    subject or key it came on names (it must be the aggregate's)."""
    try:
        validate_region(aggregate.origin)
    except InvalidRegion:
        return "bad origin"
    if origin is not None and origin != aggregate.origin:
        return "origin differs from where it came from"
    if not _PSEUDONYM.fullmatch(aggregate.pseudonym):
        return "not a pseudonym"
    if not _CATEGORY.fullmatch(aggregate.category):
        return "bad category"
    if type(aggregate.epoch) is not int or aggregate.epoch < 0:
        return "bad epoch"
    if type(aggregate.accounts) is not int or aggregate.accounts < max(k_min, K_MIN):
        return f"fewer than {max(k_min, K_MIN)} distinct accounts"
    return None


_FIELDS = {"origin", "epoch", "pseudonym", "category", "accounts"}


def encode_aggregate(aggregate: CrossRegionAggregate, *, k_min: int = K_MIN) -> bytes:
    why = residency_problem(aggregate, k_min=k_min)
    if why is not None:
        raise MalformedAggregate(f"refused to publish: {why}")
    return json.dumps({"origin": aggregate.origin, "epoch": aggregate.epoch,
                       "pseudonym": aggregate.pseudonym, "category": aggregate.category,
                       "accounts": aggregate.accounts}, sort_keys=True).encode("ascii")


def decode_aggregate(data: bytes, *, origin: str | None = None,
                     k_min: int = K_MIN) -> CrossRegionAggregate:
    if len(data) > MAX_AGGREGATE_BYTES:
        raise MalformedAggregate("too large")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedAggregate("not JSON") from None
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        raise MalformedAggregate("unexpected fields")
    aggregate = CrossRegionAggregate(doc["origin"], doc["epoch"], doc["pseudonym"],
                                     doc["category"], doc["accounts"])
    for value in (aggregate.origin, aggregate.pseudonym, aggregate.category):
        if not isinstance(value, str):
            raise MalformedAggregate("wrong field types")
    why = residency_problem(aggregate, k_min=k_min, origin=origin)
    if why is not None:
        raise MalformedAggregate(why)
    return aggregate


def board_entry(aggregate: bytes, macs: dict[str, str]) -> bytes:
    """The board's value: the aggregate's bytes, then a ``<region> <mac>`` line per receiver."""
    lines = [f"{region} {mac}".encode("ascii") for region, mac in sorted(macs.items())]
    return b"\n".join((aggregate, *lines))


def split_board_entry(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The aggregate's bytes and the MAC per receiving region (none: an unsigned entry, as
    builds before signing wrote); raises :class:`MalformedAggregate` for anything else."""
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedAggregate("too large")
    aggregate, *rest = data.split(b"\n")
    macs: dict[str, str] = {}
    for line in rest:
        try:
            region, mac = line.decode("ascii").split(" ")
            validate_region(region)
        except (ValueError, InvalidRegion):
            raise MalformedAggregate("bad MAC line") from None
        if region in macs or not _MAC.fullmatch(mac):
            raise MalformedAggregate("bad MAC line")
        macs[region] = mac
    return aggregate, macs


class DistinctAccounts:
    """Distinct accounts per (epoch, pseudonym), bounded: the oldest pseudonyms are forgotten
    first (a forgotten one starts over: it is released later, never sooner). Accounts are held
    as the caller's keyed digests, not ids."""

    def __init__(self, capacity: int = 100_000, k_min: int = K_MIN) -> None:
        self.capacity = capacity
        self.k_min = max(k_min, K_MIN)
        self._seen: OrderedDict[tuple[int, str], set[str]] = OrderedDict()
        self._released: set[tuple[int, str]] = set()

    def add(self, epoch: int, name: str, account_digest: str) -> int | None:
        """Count one flagged account; the count when this one makes it releasable for the
        first time, else None."""
        key = (epoch, name)
        accounts = self._seen.get(key)
        if accounts is None:
            if len(self._seen) >= self.capacity:
                old, _ = self._seen.popitem(last=False)
                self._released.discard(old)
            accounts = self._seen[key] = set()
        else:
            self._seen.move_to_end(key)
        if len(accounts) < self.k_min:  # past k, who else sent it does not matter
            accounts.add(account_digest)
        if len(accounts) >= self.k_min and key not in self._released:
            self._released.add(key)
            return len(accounts)
        return None
