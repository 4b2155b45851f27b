"""Errors of the bus adapter, translated from nats-py at the boundary. ``BusUnavailable`` is the
bus port's (``core.bus``), re-exported here so adapters and actors catch one class."""

from __future__ import annotations

from safeguards.core.bus import BusUnavailable
from safeguards.core.errors import SafeguardsError

__all__ = ["BusError", "BusUnavailable", "ProvisioningConflict"]


class BusError(SafeguardsError):
    """Something went wrong talking to NATS."""


class ProvisioningConflict(BusError):
    """A stream or consumer exists with a configuration we cannot adopt or update."""
