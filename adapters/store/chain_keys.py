"""The region's chain key (``core.chain``): ``SAFEGUARDS_CHAIN_KEYS_<REGION>`` (``kid:hex``) or
``$SAFEGUARDS_STATE_DIR/chain-<region>.keys``, made on first use. It stays with the application
and the operators who verify, never in the database, so the database alone cannot re-chain a
changed history."""

from __future__ import annotations

from pathlib import Path

from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.chain import ChainRow
from safeguards.core.events import Event


def load_chain_key(region: str, directory: Path | None = None) -> bytes:
    return shared_secrets(region, "chain", id_prefix="c", directory=directory,
                          what=f"the {region} region's chain key")[0][1]


def chain_row(event: Event, body: bytes, chain: bytes | None) -> ChainRow:
    return ChainRow(event.account_id, event.version, event.region, event.event_id,
                    event.body.TYPE, event.body.SCHEMA_VERSION, event.occurred_at,
                    event.causation_id, event.correlation_id, event.policy_version, body, chain)
