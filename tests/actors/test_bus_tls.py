"""TLS to NATS where a deployment turns it on: against a real nats-server with a certificate
from a CA made here, a client that trusts that CA connects (and, where the server verifies
clients, presents its own certificate); one that does not is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.nats_tls import client_tls
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.core.errors import InvalidInput


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(directory: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
           | None, usage: x509.ObjectIdentifier | None) -> tuple[x509.Certificate,
                                                                 ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(ca[0].subject if ca else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1)))
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False) if usage else builder
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(_key_pem(key))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", None, None)
    _issue(d, "server", ca, ExtendedKeyUsageOID.SERVER_AUTH)
    _issue(d, "client", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    _issue(d, "other-ca", None, None)
    return d


async def test_a_client_that_trusts_the_ca_connects_and_no_other(
        pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = {"cert_file": str(pki / "server.pem"), "key_file": str(pki / "server.key")}
    with EmbeddedNats(tmp_path, tls=tls) as server:
        monkeypatch.setenv("SAFEGUARDS_NATS_TLS_CA", str(pki / "ca.pem"))
        nc = await connect(server.url, name="tls", once=True, timeout_s=10)
        assert nc.is_connected
        await nc.close()
        monkeypatch.setenv("SAFEGUARDS_NATS_TLS_CA", str(pki / "other-ca.pem"))
        with pytest.raises(BusUnavailable):
            await connect(server.url, name="tls", once=True, timeout_s=10)
        monkeypatch.delenv("SAFEGUARDS_NATS_TLS_CA")
        with pytest.raises(BusUnavailable):  # plain TCP to a TLS-only server
            await connect(server.url, name="plain", once=True, timeout_s=10)


async def test_a_server_that_verifies_clients_needs_their_certificate(
        pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = {"cert_file": str(pki / "server.pem"), "key_file": str(pki / "server.key"),
           "ca_file": str(pki / "ca.pem"), "verify": True}
    with EmbeddedNats(tmp_path, tls=tls) as server:
        monkeypatch.setenv("SAFEGUARDS_NATS_TLS_CA", str(pki / "ca.pem"))
        with pytest.raises(BusUnavailable):
            await connect(server.url, name="no-cert", once=True, timeout_s=10)
        monkeypatch.setenv("SAFEGUARDS_NATS_TLS_CERT", str(pki / "client.pem"))
        monkeypatch.setenv("SAFEGUARDS_NATS_TLS_KEY", str(pki / "client.key"))
        nc = await connect(server.url, name="mtls", once=True, timeout_s=10)
        assert nc.is_connected
        await nc.close()


def test_half_a_configuration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_tls("nats://127.0.0.1:4222") is None
    monkeypatch.setenv("SAFEGUARDS_NATS_TLS_CERT", "/x.pem")
    with pytest.raises(InvalidInput):
        client_tls("nats://127.0.0.1:4222")
