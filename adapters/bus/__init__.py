"""The NATS JetStream bus of a region (the bus port of ``core.bus``): streams, partition
consumers, dead letters, leases, the enforcement stream and the policy board."""

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.consumers import ConsumerSettings, PartitionConsumer
from safeguards.adapters.bus.dlq import DeadLetterReason, DeadLetters
from safeguards.adapters.bus.errors import BusError, BusUnavailable, ProvisioningConflict
from safeguards.adapters.bus.leases import LeaseBucket
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.bus.streams import StreamSettings, provision_region
from safeguards.core.bus import Lease

__all__ = [
    "BusError",
    "BusUnavailable",
    "ConsumerSettings",
    "DeadLetterReason",
    "DeadLetters",
    "Lease",
    "LeaseBucket",
    "NatsBus",
    "PartitionConsumer",
    "ProvisioningConflict",
    "StreamSettings",
    "connect",
    "provision_region",
]
