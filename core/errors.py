"""The project's own error hierarchy.

Every error says whether retrying can help (``retryable``), so callers decide between a retry, a
dead letter or a typed HTTP error without string matching. Messages never carry prompt or
completion text: they name fields, sizes and types, not content.
"""

from __future__ import annotations


class SafeguardsError(Exception):
    """Root of every error this project raises on purpose."""

    retryable: bool = False


# --- bad input -------------------------------------------------------------------------------


class InvalidInput(SafeguardsError):
    """Input that will never become valid by retrying."""


class InvalidAccountId(InvalidInput):
    """An account id that is empty, too long, or holds characters we refuse at the edge."""


class InvalidRegion(InvalidInput):
    """A region name that is not a short lowercase identifier."""


class CodecError(InvalidInput):
    """A message that cannot be decoded into a known, current event or signal."""


class MalformedEnvelope(CodecError):
    """Not msgpack, not a map, or a map missing or mistyping envelope fields."""


class UnknownType(CodecError):
    """A well-formed envelope whose ``type`` no decoder knows."""


class UnsupportedSchemaVersion(CodecError):
    """A known type at a schema version with no upcaster path to the current one."""


class RetentionBaseUnreadable(CodecError):
    """A truncated history whose retention base (the snapshot standing for its removed events)
    is missing, or was made by a fold this build cannot carry to its own: the account cannot be
    read whole, and must not be folded from its kept events alone."""


class PayloadTooLarge(CodecError):
    """A message over the configured size limit; rejected before it is parsed."""


class PolicyError(InvalidInput):
    """A policy document that fails validation; the message lists every problem found."""


# --- state and storage -----------------------------------------------------------------------


class VersionGap(SafeguardsError):
    """``evolve`` was handed an event whose version does not follow the state's version."""


class ConcurrencyConflict(SafeguardsError):
    """An append lost the race for an account version: reload and decide again."""

    retryable = True

    def __init__(self, account_id: str, expected_version: int, actual_version: int | None = None):
        self.account_id = account_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        detail = "" if actual_version is None else f", store is at {actual_version}"
        super().__init__(
            f"append for account {account_id!r} expected version {expected_version}{detail}"
        )


class ResidencyViolation(SafeguardsError):
    """An event or signal of one region reached another region's store or bus."""

    def __init__(self, store_region: str, event_region: str):
        self.store_region = store_region
        self.event_region = event_region
        super().__init__(
            f"event of region {event_region!r} refused by the {store_region!r} regional store"
        )


class WrongRegionDatabase(ResidencyViolation):
    """A store opened on a database that another region claimed (its region marker)."""

    def __init__(self, store_region: str, database_region: str):
        SafeguardsError.__init__(
            self, f"this database holds region {database_region!r}; the {store_region!r} store "
                  "refuses to read or write it (check the region's database URL)")
        self.store_region = store_region
        self.event_region = database_region


class StoreUnavailable(SafeguardsError):
    """The regional store could not be reached or failed mid-operation; nothing was committed."""

    retryable = True


class SealBroken(SafeguardsError):
    """A sealed value did not open under its account's key: altered, truncated, or presented for
    another account or field. Retrying cannot help."""
