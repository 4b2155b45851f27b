"""Producer authentication: only the region's own parts may feed its actors and classifier.

What the inline gates publish (metadata signals on ``sg.<region>.acct.*``, content on
``sg.<region>.content.*``) and what the classifier publishes (score signals) carries an
HMAC-SHA256 over a domain tag, the subject and the payload under the region's producer key, in
the ``Sg-Producer`` header (``<key id>:<hex>``). Nodes and the classifier take a message only when
a key they trust made that MAC for that subject; anything else (a score forged to get an account
suspended, content planted in someone's name) is dead-lettered as an alarm. Operator actions are
proven by their operator's signature instead (``adapters.operators``).

Content (prompt and completion text) is also sealed on the bus: AES-256-GCM under a key derived
from the producer key, the subject as associated data (``seal``/``open``), so whoever can
subscribe to the content stream without the key reads nothing.

Keys: ``SAFEGUARDS_PRODUCER_KEYS_<REGION>`` (``kid:hex,...``; the first signs, all verify, so
keys rotate) where set, else ``$SAFEGUARDS_STATE_DIR/producer-<region>.keys`` (``kid hex`` per
line), made on first use for the embedded default.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safeguards.adapters.keyfiles import bound_message, shared_secrets
from safeguards.core.ids import validate_region

PRODUCER_HEADER = "Sg-Producer"
DOMAIN = b"safeguards producer message v1"
SEALED = b"SGC1"  # sealed content: SEALED, key id length, key id, 12-byte nonce, ciphertext


class Unsealable(ValueError):
    """Content that is not sealed under a key this region trusts, or was altered."""


def _content_key(secret: bytes) -> AESGCM:
    return AESGCM(hashlib.sha256(b"safeguards content key v1\x1f" + secret).digest())


def _mac(secret: bytes, subject: str, data: bytes) -> str:
    return hmac.new(secret, bound_message(DOMAIN, subject, data), hashlib.sha256).hexdigest()


class ProducerKeys:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a region needs at least one producer key")
        for kid, secret in keys:
            if len(secret) < 32 or not kid or ":" in kid:
                raise ValueError(f"producer key {kid!r}: an id without ':' and 32+ bytes")
        self.signing_id, self._signing = keys[0]
        self._trusted = dict(keys)
        self._sealers = {kid: _content_key(secret) for kid, secret in keys}

    def seal(self, subject: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        kid = self.signing_id.encode("ascii")
        sealed = self._sealers[self.signing_id].encrypt(nonce, plain, subject.encode("ascii"))
        return b"".join((SEALED, bytes([len(kid)]), kid, nonce, sealed))

    def open(self, subject: str, data: bytes) -> bytes:
        if not data.startswith(SEALED) or len(data) < 6:
            raise Unsealable("not sealed content")
        n = data[4]
        kid = data[5:5 + n].decode("ascii", "replace")
        sealer = self._sealers.get(kid)
        if sealer is None:
            raise Unsealable("sealed under a key this region does not trust")
        nonce, sealed = data[5 + n:17 + n], data[17 + n:]
        try:
            return sealer.decrypt(nonce, sealed, subject.encode("ascii"))
        except InvalidTag:
            raise Unsealable("sealed content was altered") from None

    def headers(self, subject: str, data: bytes) -> dict[str, str]:
        return {PRODUCER_HEADER: f"{self.signing_id}:{_mac(self._signing, subject, data)}"}

    def problem(self, subject: str, data: bytes, headers: dict[str, str]) -> str | None:
        """None when a trusted producer key made this message's MAC, else why not."""
        value = headers.get(PRODUCER_HEADER)
        if not value or ":" not in value:
            return "producer_unsigned"
        kid, mac = value.split(":", 1)
        secret = self._trusted.get(kid)
        if secret is None:
            return "producer_unknown_key"
        if not hmac.compare_digest(_mac(secret, subject, data), mac):
            return "producer_bad_mac"
        return None


def load_producer_keys(region: str, directory: Path | None = None) -> ProducerKeys:
    region = validate_region(region)
    return ProducerKeys(shared_secrets(region, "producer", id_prefix="p", directory=directory,
                                       what=f"the {region} region's producer key"))


def load_forwarding_keys(serving: str, home: str, directory: Path | None = None) -> ProducerKeys:
    """The key ``serving``'s gates and classifier sign with what they forward to accounts homed
    in ``home`` (``core.homes``): one key per pair of regions, so a home trusts each serving
    region separately and a region's own producer key never leaves it."""
    serving, home = validate_region(serving), validate_region(home)
    return ProducerKeys(shared_secrets(home, f"forward_{serving}", id_prefix=f"f{serving}",
                                       directory=directory,
                                       what=f"the key {serving} forwards to {home} with"))


def load_forwarders(home: str, serving: tuple[str, ...],
                    directory: Path | None = None) -> ProducerKeys | None:
    """What ``home``'s nodes verify forwarded signals with: every serving region's pair key
    (None where no other region serves its accounts)."""
    keys = [pair for region in serving if region != home
            for pair in load_forwarding_keys(region, home, directory)._trusted.items()]
    return ProducerKeys(keys) if keys else None
