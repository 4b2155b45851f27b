"""Signed enforcement: only the region's relay can tell a gate what to do with an account.

The relay signs each command it publishes with the region's Ed25519 enforcement key; the
signature covers a domain tag, the subject and the payload, so a command cannot be replayed on
another account's subject or read as anything else. It travels in two message headers
(``Sg-Key-Id``, ``Sg-Signature``) next to the unchanged payload. A gate applies a command only
when its key id names a key it trusts and the signature holds; then it checks what the payload
claims against where it came from (:func:`command_problem`).

Keys: ``SAFEGUARDS_ENFORCE_KEY_<REGION>`` (the 32-byte private seed, hex) for relays and
``SAFEGUARDS_ENFORCE_TRUST_<REGION>`` (public keys, hex, comma-separated) for gates. Without
them, the embedded default keeps ``enforce-<region>.key`` and ``enforce-<region>.pub`` in the
state folder, made on first use. Rotation: add the new public key to every gate's trusted keys,
switch the relays to the new private key, then drop the old public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from safeguards.adapters.keyfiles import bound_message, read_or_make, state_dir
from safeguards.core.enforcement import LEVEL_NAMES, EnforcementCommand
from safeguards.core.ids import validate_region
from safeguards.core.subjects import enforce_subject

KEY_ID_HEADER = "Sg-Key-Id"
SIGNATURE_HEADER = "Sg-Signature"
DOMAIN = b"safeguards enforcement command v1"
# An account's version counts its events; no history holds anywhere near this many, so a command
# claiming more is forged or corrupt however it is signed (it would pin the account for ever).
MAX_COMMAND_VERSION = 2**40


def signed_bytes(subject: str, payload: bytes) -> bytes:
    return bound_message(DOMAIN, subject, payload)


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


class CommandSigner:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def headers(self, subject: str, payload: bytes) -> dict[str, str]:
        signature = self._private.sign(signed_bytes(subject, payload))
        return {KEY_ID_HEADER: self.key_id,
                SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii")}

    def verifier(self) -> CommandVerifier:
        return CommandVerifier([self.public])


class CommandVerifier:
    """The public keys a gate trusts, by key id."""

    def __init__(self, trusted: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): k for k in trusted}
        if not self._keys:
            raise ValueError("a gate needs at least one trusted enforcement key")

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def problem(self, subject: str, payload: bytes,
                headers: Mapping[str, str] | None) -> str | None:
        """None when a trusted key signed exactly this subject and payload, else why not (a
        short reason used as a metric label)."""
        kid = headers.get(KEY_ID_HEADER) if headers else None
        signature = headers.get(SIGNATURE_HEADER) if headers else None
        if not kid or not signature:
            return "unsigned"
        key = self._keys.get(kid)
        if key is None:
            return "unknown_key"
        try:
            key.verify(base64.b64decode(signature, validate=True), signed_bytes(subject, payload))
        except (InvalidSignature, ValueError):
            return "bad_signature"
        return None


def command_problem(command: EnforcementCommand, subject: str, region: str) -> str | None:
    """What a signed command may still get wrong: another region, another account's subject, a
    level off the ladder, an impossible version. None when it is sound."""
    if command.region != region:
        return "wrong_region"
    if subject != enforce_subject(region, command.account_id):
        return "wrong_subject"
    if not 0 <= command.level < len(LEVEL_NAMES):
        return "level_off_ladder"
    if not 1 <= command.version <= MAX_COMMAND_VERSION:
        return "version_out_of_range"
    return None


@dataclass(frozen=True, slots=True)
class _Paths:
    private: Path
    public: Path


def _paths(region: str, directory: Path | None) -> _Paths:
    folder = state_dir(directory)
    return _Paths(folder / f"enforce-{region}.key", folder / f"enforce-{region}.pub")


def _seed_hex() -> str:
    return Ed25519PrivateKey.generate().private_bytes_raw().hex()


def load_signer(region: str, directory: Path | None = None) -> CommandSigner:
    """The region's relay key: ``SAFEGUARDS_ENFORCE_KEY_<REGION>`` where set, else the state
    folder's key (made on first use, its public half added to the trusted keys file)."""
    region = validate_region(region)
    raw = os.environ.get(f"SAFEGUARDS_ENFORCE_KEY_{region.upper()}")
    if raw:
        return CommandSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw)))
    paths = _paths(region, directory)
    seed = read_or_make(paths.private, _seed_hex(), f"the {region} region's enforcement key")
    signer = CommandSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)))
    read_or_make(paths.public, _raw(signer.public).hex() + "\n",
                 f"the {region} region's trusted enforcement keys")
    return signer


def load_verifier(region: str, directory: Path | None = None) -> CommandVerifier:
    """The keys a region's gates trust: ``SAFEGUARDS_ENFORCE_TRUST_<REGION>`` where set, else the
    state folder's trusted keys file (one hex key per line; in the embedded default, made with
    the region's key pair on first use)."""
    region = validate_region(region)
    raw = os.environ.get(f"SAFEGUARDS_ENFORCE_TRUST_{region.upper()}")
    if raw:
        lines = [part.strip() for part in raw.split(",") if part.strip()]
    else:
        paths = _paths(region, directory)
        if not paths.public.exists():
            load_signer(region, directory)
        lines = [line.strip() for line in paths.public.read_text().splitlines() if line.strip()]
    return CommandVerifier(Ed25519PublicKey.from_public_bytes(bytes.fromhex(line))
                           for line in lines)
