"""The region's ledger of caller-assertion nonces: one JetStream KV bucket per region.

A caller assertion (``csp.caller_auth``) is accepted once. Each gate process (and each proxy's
workers, through ``csp.shared_nonces``) remembers the nonces it took; this bucket remembers them
for the whole region, so that an assertion taken by one proxy host or ext_proc instance is
refused by every other one (``csp.nonce_ledger``).

A key is a keyed digest of a nonce (never the nonce itself); its value is empty. Taking a nonce
is JetStream's own compare-and-set: a publish that expects the key's subject to hold nothing
(``Nats-Expected-Last-Subject-Sequence: 0``), so of two hosts taking one nonce at once exactly
one succeeds. Nothing deletes a key: the bucket's max age removes it once the assertion it came
with could no longer be accepted anywhere. An assertion is accepted while its time is within
``ASSERTION_SKEW_S`` of a gate's clock, so one nonce can be presented over twice that
(``ASSERTION_SKEW_S`` early, then as late); ``CLOCK_SKEW_S`` covers the hosts' and the servers'
clocks disagreeing. History 1, file storage; replicas as the region's streams
(``streams.cluster_replicas``: R3 on a cluster, unless ``StreamSettings.replicas`` says so).

Who may do what (``nats_auth``): the region's nodes provision the bucket (with the region's
streams, ``streams.provision_region``); its gates may only publish to its keys (the create): no
read, no listing, no watch, no stream API; no role of another region may touch it.
"""

from __future__ import annotations

from nats.js import JetStreamContext, api

from safeguards.core.ids import validate_region

ASSERTION_SKEW_S = 300  # how far an assertion's time may be from the gate's clock
CLOCK_SKEW_S = 30  # how far the region's hosts' and servers' clocks may disagree, in all
LEDGER_MAX_AGE_S = 2 * ASSERTION_SKEW_S + CLOCK_SKEW_S
KEY_HEX = 32  # a key: 128 bits of keyed digest, in hex (valid KV key characters)


def nonce_bucket_name(region: str) -> str:
    return f"sg_{validate_region(region)}_nonces"


def nonce_subject(region: str, key: str) -> str:
    """The subject a key of the region's ledger is written on (``$KV.<bucket>.<key>``)."""
    if len(key) != KEY_HEX or not all(c in "0123456789abcdef" for c in key):
        raise ValueError("a nonce ledger key is a hex digest")
    return f"$KV.{nonce_bucket_name(region)}.{key}"


async def provision_nonce_bucket(js: JetStreamContext, region: str,
                                 replicas: int | None = None) -> None:
    """Create the region's ledger if it is missing (an existing one is raised to ``replicas``
    and given the ledger's max age, as ``leases.open_bucket`` does for every bucket)."""
    # imported here: leases imports streams, which provisions this bucket with the streams
    from safeguards.adapters.bus.leases import open_bucket

    description = f"caller-assertion nonces taken in region {region} (keyed digests)"
    if replicas is None:  # open_bucket's default: what the servers give
        await open_bucket(js, nonce_bucket_name(region), history=1, ttl=float(LEDGER_MAX_AGE_S),
                          storage=api.StorageType.FILE, direct=False, description=description)
    else:
        await open_bucket(js, nonce_bucket_name(region), history=1, ttl=float(LEDGER_MAX_AGE_S),
                          storage=api.StorageType.FILE, direct=False, description=description,
                          replicas=replicas)
