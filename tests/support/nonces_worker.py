"""A worker process for the shared replay-table tests: checks caller assertions against the
shared nonce table (a module of its own, so a spawned process imports nothing else)."""

from __future__ import annotations

import contextlib
from typing import Any

from safeguards.adapters.csp.caller_auth import CallerAuth, CallerKey
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.shared_nonces import Handle, SharedNonces


def check_all(handle: Handle, key: CallerKey, proofs: list[str], body: bytes, now: float,
              out: Any) -> None:
    """Check each assertion (signed for ``acct-1``'s POST /v1/messages); put the refusals."""
    nonces = SharedNonces.attach(handle)
    try:
        auth = CallerAuth([key])
        auth.nonces = nonces
        for proof in proofs:
            with contextlib.suppress(BadRequest):  # counted in auth.refused: the test reads it
                auth.check({"x-csp-account-id": "acct-1"}, proof, body, "203.0.113.7", now,
                           method="POST", target="/v1/messages")
        out.put(dict(auth.refused))
    finally:
        nonces.close()
