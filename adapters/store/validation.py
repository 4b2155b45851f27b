"""What both event stores share: request validation and the read-side arguments' checks.

Validation runs before anything is written, so a bad request writes nothing in either store and
fails the same way in both (the contract suite checks that they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from safeguards.core.errors import InvalidInput, ResidencyViolation
from safeguards.core.ids import validate_account_id
from safeguards.core.ports import AppendRequest

MAX_ID_LENGTH = 256
MAX_EVENTS_PER_APPEND = 10_000
# A load decodes and folds at most 31 events after its snapshot (~10 us each); a snapshot costs
# one encode of a state this store already holds, so snapshotting often is cheap.
DEFAULT_SNAPSHOT_EVERY = 32


class UnencodableBody(InvalidInput):
    """An event body the codec cannot pack (a field of the wrong kind); the batch is refused."""

    def __init__(self, version: int, exc: BaseException) -> None:
        super().__init__(f"event at version {version}: body cannot be encoded "
                         f"({type(exc).__name__})")


def check_text(value: object, what: str, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    # Fast path for the usual ids: short ASCII without NUL (checked per event on every append).
    if type(value) is str and len(value) <= MAX_ID_LENGTH and value.isascii() \
            and "\x00" not in value:
        return
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if "\x00" in value:
        raise InvalidInput(f"{what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode (lone surrogate)") from None


def check_request(region: str, request: AppendRequest) -> None:
    """Raise before any write: a typed error naming the first problem found."""
    validate_account_id(request.account_id)
    if not isinstance(request.expected_version, int) or request.expected_version < 0:
        raise InvalidInput("expected_version must be an integer >= 0")
    if len(request.events) > MAX_EVENTS_PER_APPEND:
        raise InvalidInput(
            f"{len(request.events)} events in one append; the limit is {MAX_EVENTS_PER_APPEND}"
        )
    check_text(request.inbox_key, "inbox key", nullable=True)
    if request.inbox_key == "":
        raise InvalidInput("inbox key is empty")
    region_ok = region
    account = request.account_id
    want = request.expected_version
    for i, event in enumerate(request.events):
        want += 1
        if event.region != region_ok:
            raise ResidencyViolation(region, event.region)
        if event.account_id != account:
            raise InvalidInput(f"event {i} belongs to another account than the append")
        if event.version != want:
            raise InvalidInput(f"event {i} has version {event.version}; expected {want}")
        if event.occurred_at.tzinfo is None:
            raise InvalidInput(f"event {i}: occurred_at must carry a timezone")
        # One check for the usual case (short ASCII ids, no NUL); field by field otherwise.
        try:
            joined = "\x01".join((event.event_id, event.causation_id, event.correlation_id,
                                   event.policy_version or ""))
        except TypeError:
            joined = ""
        if not joined or len(joined) > MAX_ID_LENGTH or not joined.isascii() \
                or "\x00" in joined:
            check_text(event.event_id, f"event {i} event_id")
            check_text(event.causation_id, f"event {i} causation_id")
            check_text(event.correlation_id, f"event {i} correlation_id")
            check_text(event.policy_version, f"event {i} policy_version", nullable=True)
    for message in request.outbox:
        check_text(message.message_id, "outbox message_id")
        check_text(message.subject, "outbox subject")
        if not isinstance(message.payload, bytes):
            raise InvalidInput("outbox payload must be bytes")


def check_batch(region: str, requests: Sequence[AppendRequest]) -> None:
    """A whole batch is refused before any write when one request is malformed or foreign:
    those are bugs or residency breaches, not races, so no part of the batch may land."""
    for request in requests:
        check_request(region, request)


def check_range(from_version: int, to_version: int | None, since: datetime | None,
                until: datetime | None) -> None:
    if from_version < 1:
        raise InvalidInput("from_version starts at 1")
    if to_version is not None and to_version < 0:
        raise InvalidInput("to_version must be >= 0")
    for name, at in (("since", since), ("until", until)):
        if at is not None and at.tzinfo is None:
            raise InvalidInput(f"{name} must carry a timezone")


def check_state_at(version: int | None, at: datetime | None) -> None:
    if (version is None) == (at is None):
        raise InvalidInput("state_at needs exactly one of version or at")
    if version is not None and version < 0:
        raise InvalidInput("version must be >= 0")
    if at is not None and at.tzinfo is None:
        raise InvalidInput("at must carry a timezone")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= 100_000:
        raise InvalidInput("limit must be 1..100000")


def crosses_snapshot(before: int, after: int, every: int) -> bool:
    """Whether appending ``before+1..after`` passes a multiple of ``every``."""
    return after // every > before // every
