"""NATS subject and stream names for one region (see ARCHITECTURE.md, "NATS subjects").

Every account appears in a subject only as its :func:`subject_token`, never as the raw id.
"""

from __future__ import annotations

from safeguards.core.ids import partition_of, subject_token, validate_region

# Partitions per region: ``hash(account) mod P``. P is fixed for the life of a region's streams;
# every writer to a region's input subjects must use the region's P.
DEFAULT_PARTITIONS = 16


def inputs_subject(region: str, partitions: int, account_id: str) -> str:
    """Signals for one account: ``sg.<region>.acct.<partition>.<token>``."""
    p = partition_of(account_id, partitions)
    return f"sg.{validate_region(region)}.acct.{p}.{subject_token(account_id)}"


def is_inputs_subject(subject: str) -> bool:
    """Whether ``subject`` is an input subject (``sg.<region>.acct.<partition>.<token>``), as an
    outbox row that forwards a signal names one; enforcement commands name ``enforce`` ones."""
    parts = subject.split(".")
    return len(parts) == 5 and parts[0] == "sg" and parts[2] == "acct"


def partition_filter(region: str, partition: int) -> str:
    return f"sg.{validate_region(region)}.acct.{partition}.*"


def content_subject(region: str, account_id: str) -> str:
    return f"sg.{validate_region(region)}.content.{subject_token(account_id)}"


def enforce_subject(region: str, account_id: str) -> str:
    return f"sg.{validate_region(region)}.enforce.{subject_token(account_id)}"


def classify_subject(region: str) -> str:
    """Request/reply: synchronous scoring with a deadline for the inline path."""
    return f"sg.{validate_region(region)}.classify"


def dead_letter_subject(region: str, source: str) -> str:
    """Where poison messages go, with their reason in headers; ``source`` names the consumer."""
    return f"sg.{validate_region(region)}.dlq.{source}"


def stream_name(region: str, kind: str) -> str:
    """``SG_<REGION>_<KIND>`` for kind in INPUTS, CONTENT, ENFORCE, DLQ."""
    return f"SG_{validate_region(region).upper()}_{kind.upper()}"
