"""Errors of the bus adapter, translated from nats-py at the boundary."""

from __future__ import annotations

from safeguards.core.errors import SafeguardsError


class BusError(SafeguardsError):
    """Something went wrong talking to NATS."""


class BusUnavailable(BusError):
    """NATS could not be reached or did not answer before the deadline; nothing was confirmed."""

    retryable = True


class ProvisioningConflict(BusError):
    """A stream or consumer exists with a configuration we cannot adopt or update."""
