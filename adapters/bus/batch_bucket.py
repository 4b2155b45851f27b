"""The region's batch ledger: one JetStream KV bucket per region (``sg_<region>_batches``).

A gate that creates a Message Batch (``csp.batches``) keeps what each admitted request's result
is checked and observed with (``csp.batch_ledger``: the admission's decision, the prompt's
metadata — digest, link key, length, model — and the errored results of the refused requests)
under a key derived from the batch id, so that its results are read with the same context on
another worker, another proxy host or after a restart. Values are sealed with the region's
producer key (bound to the key's subject) and carry no prompt or completion text.

Results stay readable at the provider for 29 days after a batch's creation; the bucket keeps a
record for ``BATCH_MAX_AGE_S`` (that and a day); a value holds at most ``MAX_VALUE_BYTES`` (a
record spans several), and the bucket at most ``max_bytes`` where the region sets it
(``StreamSettings.batch_ledger_max_bytes``; JetStream reserves it, so none by default, as the
region's streams: their max age bounds them; a full bucket refuses a new record: the gate counts
it and holds that batch in memory only). History 1,
file storage, direct gets (a gate reads one key, never lists). Who may do what (``nats_auth``):
the region's gates write and read keys by subject; its nodes provision the bucket.
"""

from __future__ import annotations

from nats.js import JetStreamContext, api

from safeguards.core.ids import validate_region

RESULTS_RETENTION_S = 29 * 86_400  # the provider keeps a batch's results 29 days
BATCH_MAX_AGE_S = RESULTS_RETENTION_S + 86_400
CHUNK_BYTES = 256 * 1024  # a value's most (under the servers' 1 MiB max payload)
MAX_VALUE_BYTES = CHUNK_BYTES + 1024  # a chunk and its seal


def batch_bucket_name(region: str) -> str:
    return f"sg_{validate_region(region)}_batches"


def batch_subject(region: str, key: str) -> str:
    """The subject a key of the region's batch ledger is written on (``$KV.<bucket>.<key>``)."""
    return f"$KV.{batch_bucket_name(region)}.{key}"


def batch_direct_get(region: str, key: str) -> str:
    """The direct-get subject that reads ``key``'s last value."""
    name = batch_bucket_name(region)
    return f"$JS.API.DIRECT.GET.KV_{name}.$KV.{name}.{key}"


async def provision_batch_bucket(js: JetStreamContext, region: str,
                                 replicas: int | None = None,
                                 max_bytes: int | None = None) -> None:
    """Create the region's batch ledger if it is missing (as ``nonce_bucket``)."""
    from safeguards.adapters.bus.leases import open_bucket

    description = f"message batches admitted in region {region} (sealed metadata, no text)"
    name = batch_bucket_name(region)
    if replicas is None:  # open_bucket's default: what the servers give
        await open_bucket(js, name, history=1, ttl=float(BATCH_MAX_AGE_S),
                          storage=api.StorageType.FILE, direct=True, description=description,
                          max_bytes=max_bytes or -1, max_value_size=MAX_VALUE_BYTES)
    else:
        await open_bucket(js, name, history=1, ttl=float(BATCH_MAX_AGE_S),
                          storage=api.StorageType.FILE, direct=True, description=description,
                          max_bytes=max_bytes or -1, max_value_size=MAX_VALUE_BYTES,
                          replicas=replicas)
