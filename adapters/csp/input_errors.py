"""Why a provider's batch job's input could not be checked: the typed errors of the readers
(``object_store`` for S3, ``gcs_store`` for Cloud Storage, ``assumed_roles`` for a Bedrock
job's role). Each carries the HTTP status the job's creation answers with; none carries the
store's own message or a byte of the input."""

from __future__ import annotations


class ObjectStoreError(Exception):
    """A job's input that cannot be checked; ``status`` is the HTTP status it answers with."""

    status = 400


class BadInputUri(ObjectStoreError):
    pass


class InputTooLarge(ObjectStoreError):
    status = 413


class ObjectUnreadable(ObjectStoreError):
    """The store did not hand the object over (missing, unreachable, cut off), or the gate's own
    credentials failed it: nothing the job's authority was denied."""

    status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(f"the job's input could not be read ({reason})")
        self.reason = reason


class AccessRefused(ObjectStoreError):
    """The job's authority (a Bedrock job's role, a Vertex caller's own token) may not read its
    input, or there is none: the job is refused whatever the account's standing, as the
    provider's own read would fail. ``reason``: the store's or STS's short code, never its
    message, and no more than that authority would learn itself."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(f"{message} ({reason})")
        self.status = status
        self.reason = reason
