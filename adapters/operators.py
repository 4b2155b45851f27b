"""Operator identity: each operator holds an Ed25519 key; the region's registry lists them with
their role and public key; the nodes decide on an operator action only when its registered
operator signed it (``core.operators`` says what each role may do).

``safeguards ops operator add NAME --role admin --region eu`` makes the operator's key (kept in
``$SAFEGUARDS_STATE_DIR/operators/NAME.key``, owner-only: the operator's own secret) and adds the
public key to the region's registry (``SAFEGUARDS_OPERATORS_<REGION>``, a file path, else
``$SAFEGUARDS_STATE_DIR/operators-<region>.json``). Nodes re-read the registry when it changes,
so adding or removing an operator needs no restart. The ops tools sign what they send: the
signature covers a domain tag, the subject and the signal's bytes, in the ``Sg-Operator`` and
``Sg-Operator-Signature`` headers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from safeguards.adapters.keyfiles import bound_message, read_or_make, state_dir
from safeguards.core.errors import InvalidInput
from safeguards.core.events import Signal
from safeguards.core.ids import validate_region
from safeguards.core.operators import ROLES, named_operator, role_problem

OPERATOR_HEADER = "Sg-Operator"
SIGNATURE_HEADER = "Sg-Operator-Signature"
DOMAIN = b"safeguards operator action v1"
READ_DOMAIN = b"safeguards operator read v1"
CONSOLE_DOMAIN = b"safeguards console sign-in v1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _signed(subject: str, data: bytes) -> bytes:
    return bound_message(DOMAIN, subject, data)


def registry_path(region: str, directory: Path | None = None) -> Path:
    region = validate_region(region)
    configured = os.environ.get(f"SAFEGUARDS_OPERATORS_{region.upper()}")
    return Path(configured) if configured else state_dir(directory) / f"operators-{region}.json"


def key_path(name: str, directory: Path | None = None) -> Path:
    return state_dir(directory) / "operators" / f"{validated_name(name)}.key"


def validated_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput("an operator name is 1-64 letters, digits and . _ @ -")
    return name


def add_operator(region: str, name: str, role: str, directory: Path | None = None) -> Path:
    """Register ``name`` with ``role`` in the region (its key is made once and kept); returns
    the path of the operator's private key."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    path = key_path(name, directory)
    seed = read_or_make(path, Ed25519PrivateKey.generate().private_bytes_raw().hex(),
                        f"operator {name}'s key")
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)).public_key()
    registry = registry_path(region, directory)
    entries = _read(registry)
    entries[name] = {"role": role, "public_key": public.public_bytes_raw().hex()}
    registry.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    os.replace(tmp, registry)
    return path


def remove_operator(region: str, name: str, directory: Path | None = None) -> bool:
    registry = registry_path(region, directory)
    entries = _read(registry)
    if entries.pop(name, None) is None:
        return False
    registry.write_text(json.dumps(entries, indent=1, sort_keys=True))
    return True


def _read(registry: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(registry.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"{registry} is not an operator registry")
    return doc


class OperatorSigner:
    def __init__(self, name: str, directory: Path | None = None) -> None:
        path = key_path(name, directory)
        if not path.exists():
            raise InvalidInput(f"no key for operator {name}: an admin runs "
                               f"'safeguards ops operator add {name} --role ... --region ...'")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))

    def headers(self, subject: str, data: bytes) -> dict[str, str]:
        signature = self._key.sign(_signed(subject, data))
        return {OPERATOR_HEADER: self.name,
                SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii")}

    def sign_read(self, region: str, command: str, subject: str) -> str:
        """The signature an audited read carries (``nonce:base64``)."""
        nonce = secrets.token_hex(8)
        signature = self._key.sign(_read_message(region, self.name, command, subject, nonce))
        return f"{nonce}:{base64.b64encode(signature).decode('ascii')}"

    def sign_console(self, region: str, text: str) -> str:
        """A console sign-in proof: this operator's signature over ``text`` (the console says
        what it covers), bound to the region's console (base64url, no padding)."""
        signature = self._key.sign(_console_message(region, text))
        return base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")


def _console_message(region: str, text: str) -> bytes:
    return bound_message(CONSOLE_DOMAIN, f"sg.{validate_region(region)}.console", text.encode())


def _read_message(region: str, operator: str, command: str, subject: str, nonce: str) -> bytes:
    return bound_message(READ_DOMAIN, f"sg.{validate_region(region)}.reads",
                         "\x1f".join((operator, command, subject, nonce)).encode())


class OperatorRegistry:
    """``core.operators.OperatorAuthority`` over the region's registry file."""

    def __init__(self, region: str, directory: Path | None = None) -> None:
        self.path = registry_path(region, directory)
        self._seen: float | None = None
        self._operators: dict[str, tuple[str, Ed25519PublicKey]] = {}

    def _current(self) -> dict[str, tuple[str, Ed25519PublicKey]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._seen, self._operators = None, {}
            return self._operators
        if mtime != self._seen:
            self._operators = {
                name: (entry["role"], Ed25519PublicKey.from_public_bytes(
                    bytes.fromhex(entry["public_key"])))
                for name, entry in _read(self.path).items()}
            self._seen = mtime
        return self._operators

    def role(self, operator: str) -> str | None:
        """The operator's registered role; None for a name the registry does not hold."""
        known = self._current().get(operator)
        return None if known is None else known[0]

    def console_role(self, region: str, operator: str, text: str, signature: str) -> str | None:
        """The role of ``operator`` when their registered key signed ``text`` for this region's
        console (``OperatorSigner.sign_console``), else None."""
        known = self._current().get(operator)
        if known is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            known[1].verify(raw, _console_message(region, text))
        except (InvalidSignature, ValueError):
            return None
        return known[0]

    def read_status(self, region: str, operator: str, command: str, subject: str,
                    signature: str | None) -> str:
        """"signed" when a registered operator's key signed this audited read, else why not
        ("unsigned", "unknown_operator", "bad_signature")."""
        if not signature:
            return "unsigned"
        known = self._current().get(operator)
        if known is None:
            return "unknown_operator"
        nonce, _, encoded = signature.partition(":")
        try:
            known[1].verify(base64.b64decode(encoded, validate=True),
                            _read_message(region, operator, command, subject, nonce))
        except (InvalidSignature, ValueError):
            return "bad_signature"
        return "signed"

    def problem(self, subject: str, data: bytes, headers: dict[str, str],
                signal: Signal) -> str | None:
        name, signature = headers.get(OPERATOR_HEADER), headers.get(SIGNATURE_HEADER)
        if not name or not signature:
            return "operator_unsigned"
        try:
            known = self._current().get(name)
        except (OSError, ValueError, KeyError, InvalidInput):
            return "operator_registry_unreadable"
        if known is None:
            return "operator_unknown"
        role, public = known
        try:
            public.verify(base64.b64decode(signature, validate=True), _signed(subject, data))
        except (InvalidSignature, ValueError):
            return "operator_bad_signature"
        observation = signal.observation
        assert observation is not None
        named = named_operator(observation)
        if named is not None and named != name:
            return "operator_mismatch"
        return "operator_not_permitted" if role_problem(role, observation) else None
