"""Fixtures of the region tests: each test's own state folder (its regions' keys only) and a
nats-server admitting us's and eu's roles with home routing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from safeguards.adapters.bus.nats_auth import (
    NatsIdentity,
    NatsRole,
    make_identities,
    new_seed,
    server_authorization,
)
from safeguards.adapters.embedded import EmbeddedNats


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keys of this test's regions only (identities, producer, forwarding, enforcement)."""
    folder = tmp_path / "state"
    monkeypatch.setenv("SAFEGUARDS_STATE_DIR", str(folder))
    return folder


@pytest.fixture
def secured(state: Path, tmp_path: Path) -> Any:
    """A nats-server admitting us's and eu's roles with home routing, and an auditor that may
    only listen (it sees every message, to search them for the canary)."""
    identities = make_identities(("us", "eu"))
    auditor = NatsIdentity("us", NatsRole.OPERATOR, new_seed())
    authorization = server_authorization(identities, home_routing=True)
    authorization["users"].append({"nkey": auditor.public_key, "permissions": {
        "publish": {"deny": [">"]}, "subscribe": {"allow": [">"]}}})
    with EmbeddedNats(tmp_path / "nats", authorization=authorization) as server:
        yield server.url, auditor
