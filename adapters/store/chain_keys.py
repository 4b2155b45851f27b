"""The region's chain key (``core.chain``): ``SAFEGUARDS_CHAIN_KEYS_<REGION>`` (``kid:hex``) or
``$SAFEGUARDS_STATE_DIR/chain-<region>.keys``, made on first use. It stays with the application
and the operators who verify, never in the database, so the database alone cannot re-chain a
changed history."""

from __future__ import annotations

from pathlib import Path

from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.chain import ChainRow
from safeguards.core.events import Event


def load_chain_keys(region: str, directory: Path | None = None) -> list[bytes]:
    """The region's chain keys, newest first: the first chains new events, all verify (list a
    new key before the old ones to rotate; keep the old ones while their events are kept)."""
    return [secret for _, secret in shared_secrets(
        region, "chain", id_prefix="c", directory=directory,
        what=f"the {region} region's chain key")]


def load_chain_key(region: str, directory: Path | None = None) -> bytes:
    """The key new events are chained under."""
    return load_chain_keys(region, directory)[0]


def chain_row(event: Event, body: bytes, chain: bytes | None) -> ChainRow:
    return ChainRow(event.account_id, event.version, event.region, event.event_id,
                    event.body.TYPE, event.body.SCHEMA_VERSION, event.occurred_at,
                    event.causation_id, event.correlation_id, event.policy_version, body, chain)
