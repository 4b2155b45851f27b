"""Who is signed in to a region's console: sign-in proofs, session cookies and CSRF tokens.

Sign-in reuses the operator identities of the trust-boundaries work: no new secret. An operator
proves who they are with the Ed25519 key the region's registry lists for them, by signing a
short-lived sign-in token (``safeguards console-link NAME --region R`` prints a link holding
one): ``NAME~ISSUED~NONCE~SIGNATURE``, the signature over the name, the issue time and the nonce
under the console's domain tag and the region (a token for one region's console is refused by
another's). A token is good for ``TOKEN_TTL_S`` and once.

The session is a cookie the console signs (HMAC-SHA256 under the region's console key, kept in
the state folder like every other key, never in the database): operator, expiry, a session id
and the session's CSRF token. The role is not in it: every request reads the operator's role
from the registry, so removing an operator or changing their role takes effect at once. Every
POST must carry the session's CSRF token (a form field or the ``X-CSRF-Token`` header htmx
sends); the sign-in form itself is protected by a double-submitted random value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from safeguards.adapters.keyfiles import read_or_make, state_dir
from safeguards.adapters.operators import OperatorRegistry, OperatorSigner, validated_name
from safeguards.core.errors import InvalidInput
from safeguards.core.ids import validate_region

TOKEN_TTL_S = 300.0
SESSION_TTL_S = 8 * 3600.0
MAX_TOKEN = 400
MAX_SEEN_NONCES = 10_000


class SignInRefused(InvalidInput):
    """A sign-in token that is malformed, expired, replayed or not signed by a registered
    operator of this region (the message says which, never anything secret)."""


def _text(operator: str, issued: int, nonce: str) -> str:
    return f"console-sign-in\x1f{operator}\x1f{issued}\x1f{nonce}"


def make_token(region: str, operator: str, now: float, directory: Path | None = None) -> str:
    """A sign-in token for ``operator``, signed with their key (which must be here)."""
    signer = OperatorSigner(operator, directory)
    issued, nonce = int(now), secrets.token_hex(12)
    signature = signer.sign_console(region, _text(operator, issued, nonce))
    return f"{operator}~{issued}~{nonce}~{signature}"


@dataclass(frozen=True, slots=True)
class Session:
    operator: str
    expires_at: float
    session_id: str
    csrf: str


class ConsoleAuth:
    """Sign-in checks and session cookies of one region's console."""

    def __init__(self, region: str, registry: OperatorRegistry | None = None, *,
                 key: bytes | None = None, directory: Path | None = None,
                 session_ttl_s: float = SESSION_TTL_S) -> None:
        self.region = validate_region(region)
        self.registry = registry or OperatorRegistry(self.region, directory)
        self.cookie_name = f"sg_console_{self.region}"
        self._session_ttl_s = session_ttl_s
        if key is None:
            path = state_dir(directory) / f"console-{self.region}.key"
            key = bytes.fromhex(read_or_make(path, secrets.token_hex(32) + "\n",
                                             f"the {self.region} console's session key").strip())
        self._key = key
        self._seen: dict[str, float] = {}  # nonce -> when its token lapses (single use)
        self._revoked: dict[str, float] = {}  # signed-out session ids -> their expiry

    # --- sign-in -----------------------------------------------------------------------------

    def sign_in(self, token: str, now: float) -> tuple[Session, str]:
        """The session a valid token opens, and its cookie value; else ``SignInRefused``."""
        token = token.strip()
        if not token or len(token) > MAX_TOKEN or not token.isascii():
            raise SignInRefused("not a sign-in token")
        parts = token.split("~")
        if len(parts) != 4 or not parts[1].isdigit():
            raise SignInRefused("not a sign-in token")
        operator, issued_text, nonce, signature = parts
        try:
            validated_name(operator)
        except InvalidInput:
            raise SignInRefused("not a sign-in token") from None
        issued = int(issued_text)
        if not -30.0 <= now - issued <= TOKEN_TTL_S:
            raise SignInRefused("the sign-in token has expired: make a new one")
        role = self.registry.console_role(self.region, operator,
                                          _text(operator, issued, nonce), signature)
        if role is None:
            raise SignInRefused(f"no operator of region {self.region} signed this token")
        self._forget_lapsed(now)
        if nonce in self._seen:
            raise SignInRefused("this sign-in token was used already: make a new one")
        if len(self._seen) >= MAX_SEEN_NONCES:
            raise SignInRefused("too many sign-ins in the last minutes: try again shortly")
        self._seen[nonce] = issued + TOKEN_TTL_S + 30.0
        session = Session(operator, now + self._session_ttl_s, secrets.token_hex(12),
                          secrets.token_urlsafe(24))
        return session, self._encode(session)

    def _forget_lapsed(self, now: float) -> None:
        for table in (self._seen, self._revoked):
            for key in [k for k, until in table.items() if until < now]:
                del table[key]

    # --- sessions ----------------------------------------------------------------------------

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, b"safeguards console session v1\x1f" + payload,
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _encode(self, session: Session) -> str:
        payload = json.dumps({"r": self.region, "o": session.operator,
                              "e": round(session.expires_at, 3), "s": session.session_id,
                              "c": session.csrf}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")
        return f"{body}.{self._mac(payload)}"

    def session(self, cookie: str | None, now: float) -> tuple[Session, str] | None:
        """The session and the operator's current role, for a cookie this console signed that
        has not expired or been signed out, of an operator still registered; else None."""
        if not cookie or len(cookie) > 1000 or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        doc = json.loads(payload)
        session = Session(doc["o"], float(doc["e"]), doc["s"], doc["c"])
        if doc["r"] != self.region or session.expires_at < now \
                or session.session_id in self._revoked:
            return None
        role = self.registry.role(session.operator)
        return None if role is None else (session, role)

    def sign_out(self, session: Session) -> None:
        self._revoked[session.session_id] = session.expires_at

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(session.csrf.encode(),
                                                             presented.encode())
