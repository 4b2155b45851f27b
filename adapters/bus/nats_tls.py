"""TLS to NATS, where a deployment turns it on (optional: the embedded default talks to its own
server on loopback).

``SAFEGUARDS_NATS_TLS_CA``: the CA bundle that signed the servers' certificates; every
connection then requires TLS and verifies the server (name and chain). With
``SAFEGUARDS_NATS_TLS_CERT`` and ``SAFEGUARDS_NATS_TLS_KEY`` as well, the client presents its own
certificate (for a server that verifies clients). A ``tls://`` URL without a CA verifies against
the system's trust store.
"""

from __future__ import annotations

import os
import ssl

from safeguards.core.errors import InvalidInput


def client_tls(url: str) -> ssl.SSLContext | None:
    """The TLS context connections to ``url`` use, or None for plain TCP."""
    ca = os.environ.get("SAFEGUARDS_NATS_TLS_CA")
    cert = os.environ.get("SAFEGUARDS_NATS_TLS_CERT")
    key = os.environ.get("SAFEGUARDS_NATS_TLS_KEY")
    if not ca and not url.startswith("tls://"):
        if cert or key:
            raise InvalidInput("SAFEGUARDS_NATS_TLS_CERT/KEY need SAFEGUARDS_NATS_TLS_CA")
        return None
    context = ssl.create_default_context(cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if bool(cert) != bool(key):
        raise InvalidInput("SAFEGUARDS_NATS_TLS_CERT and SAFEGUARDS_NATS_TLS_KEY go together")
    if cert and key:
        context.load_cert_chain(cert, key)
    return context
