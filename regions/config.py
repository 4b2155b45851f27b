"""Region configuration: each region has its own NATS subject space, PostgreSQL and actors."""

from __future__ import annotations

import os
from dataclasses import dataclass

from safeguards.core.ids import validate_region
from safeguards.core.subjects import DEFAULT_PARTITIONS

DEFAULT_REGIONS = ("us", "eu")


@dataclass(frozen=True, slots=True)
class RegionConfig:
    name: str
    database_url: str  # this region's PostgreSQL; nothing of another region is ever written there
    nats_url: str
    partitions: int = DEFAULT_PARTITIONS
    # the other regions whose accounts this region's gates serve by their home's rules, and
    # whose gates may forward scores of this region's accounts here (``core.homes``)
    peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_region(self.name)
        for peer in self.peers:
            validate_region(peer)
        if not 1 <= self.partitions <= 4096:
            raise ValueError(f"partitions must be 1..4096, got {self.partitions}")


def env_override(name: str) -> str | None:
    """``SAFEGUARDS_NATS_URL`` / ``SAFEGUARDS_DATABASE_URL`` replace the embedded servers."""
    value = os.environ.get(name)
    return value or None
