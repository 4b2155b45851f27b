"""The NATS JetStream bus of a region: streams, partition consumers, dead letters and leases."""

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.consumers import ConsumerSettings, PartitionConsumer
from safeguards.adapters.bus.dlq import DeadLetterReason, DeadLetters
from safeguards.adapters.bus.errors import BusError, BusUnavailable, ProvisioningConflict
from safeguards.adapters.bus.leases import Lease, LeaseBucket
from safeguards.adapters.bus.streams import StreamSettings, provision_region

__all__ = [
    "BusError",
    "BusUnavailable",
    "ConsumerSettings",
    "DeadLetterReason",
    "DeadLetters",
    "Lease",
    "LeaseBucket",
    "PartitionConsumer",
    "ProvisioningConflict",
    "StreamSettings",
    "connect",
    "provision_region",
]
