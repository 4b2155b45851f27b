"""Caller authentication: the provider's front door proves which account a request is from.

Each request carries a signed assertion in ``x-csp-caller-assertion``::

    v1 kid=<key id> ts=<unix seconds> sig=<hex HMAC-SHA256>

over ``sg-caller-v1``, the time, the account, organisation, project and API-key id headers (empty
when absent) and the sha256 of the body, one per line: an assertion names exactly one request's
identity and content, within ``MAX_SKEW_S`` of the gate's clock. Keys are shared secrets by key
id, so the front door can roll to a new key while the gate trusts both.

Keys: ``SAFEGUARDS_CALLER_KEYS_<REGION>`` (``kid:hex,kid:hex``, each secret at least 32 bytes)
where set, else the state folder's ``caller-<region>.keys`` (``kid hex`` per line), made on
first use with one development key, which ``safeguards run`` prints with how a client signs.

Modes (``ProxyConfig.caller_auth``): ``required`` refuses any request without a valid assertion
(401); ``loopback`` (the embedded default, which listens on 127.0.0.1 only) also takes unsigned
requests from this machine, so that the front door and tools beside the proxy need no key, while
any other peer must sign. A present assertion is always checked: a bad one is refused anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

from safeguards.adapters.csp.identity import API_KEY_HEADER, ORGANIZATION_HEADER, PROJECT_HEADER
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.ids import validate_region

ASSERTION_HEADER = "x-csp-caller-assertion"


class _HasHeadersAndContent(Protocol):
    @property
    def headers(self) -> MutableMapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


_Request = TypeVar("_Request", bound=_HasHeadersAndContent)
MAX_SKEW_S = 300
MODES = ("required", "loopback")


@dataclass(frozen=True, slots=True)
class CallerKey:
    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if not self.key_id or not all(c.isascii() and (c.isalnum() or c == "-")
                                      for c in self.key_id):
            raise ValueError("a caller key id is letters, digits and '-'")
        if len(self.secret) < 32:
            raise ValueError(f"caller key {self.key_id}: the secret must hold at least 32 bytes")


def _signed(ts: int, identity: tuple[str, str, str, str], body: bytes) -> bytes:
    return "\n".join(("sg-caller-v1", str(ts), *identity,
                      hashlib.sha256(body).hexdigest())).encode("ascii")


def assertion(key: CallerKey, *, account: str, body: bytes, now: float,
              organization: str = "", project: str = "", api_key_id: str = "") -> str:
    """The header value a front door sends with one request."""
    ts = int(now)
    mac = hmac.new(key.secret, _signed(ts, (account, organization, project, api_key_id), body),
                   hashlib.sha256).hexdigest()
    return f"v1 kid={key.key_id} ts={ts} sig={mac}"


class CallerAuth:
    def __init__(self, keys: list[CallerKey], mode: str = "required",
                 account_header: str = "x-csp-account-id") -> None:
        if mode not in MODES:
            raise ValueError(f"caller_auth must be one of {MODES}, got {mode!r}")
        self._keys = {k.key_id: k.secret for k in keys}
        self.mode = mode
        self.account_header = account_header.lower()
        self.refused: dict[str, int] = {}  # by reason

    def check(self, identity: Mapping[str, str], value: str | None, body: bytes,
              peer: str | None, now: float) -> None:
        """Raise 401 unless the request is proven (or, in ``loopback`` mode, unsigned from this
        machine). ``identity``: the identity headers as sent (lower-case names)."""
        if value is None:
            if self.mode == "loopback" and _is_loopback(peer):
                return
            self._refuse("unsigned", f"missing {ASSERTION_HEADER} header")
        fields = dict(part.split("=", 1) for part in value.split(" ")[1:] if "=" in part)
        if not value.startswith("v1 ") or not {"kid", "ts", "sig"} <= fields.keys():
            self._refuse("malformed", f"malformed {ASSERTION_HEADER} header")
        secret = self._keys.get(fields["kid"])
        if secret is None:
            self._refuse("unknown_key", "the caller assertion's key is not trusted")
        if not fields["ts"].isdigit() or abs(now - int(fields["ts"])) > MAX_SKEW_S:
            self._refuse("expired", "the caller assertion is outside the accepted time window")
        signed = _signed(int(fields["ts"]), (
            identity.get(self.account_header, ""), identity.get(ORGANIZATION_HEADER, ""),
            identity.get(PROJECT_HEADER, ""), identity.get(API_KEY_HEADER, "")), body)
        expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["sig"]):
            self._refuse("bad_signature", "the caller assertion does not match this request")

    def _refuse(self, reason: str, message: str) -> NoReturn:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        raise BadRequest(401, message)


def _is_loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ip_address(peer).is_loopback
    except ValueError:
        return False


def load_caller_keys(region: str, directory: Path | None = None) -> list[CallerKey]:
    region = validate_region(region)
    return [CallerKey(kid, secret) for kid, secret in shared_secrets(
        region, "caller", id_prefix="dev", directory=directory,
        what=f"the {region} region's development caller key")]


class SignedCaller:
    """An auth hook that names the caller and signs each request, for clients built on httpx or
    its successor httpx2 (both take a callable ``auth``): the ``anthropic`` SDK with
    ``http_client=<its httpx>.AsyncClient(auth=SignedCaller(key, "acct-1"))``."""

    def __init__(self, key: CallerKey, account: str, *, organization: str = "",
                 project: str = "", api_key_id: str = "",
                 account_header: str = "x-csp-account-id") -> None:
        self.key = key
        self.headers = {account_header: account, ORGANIZATION_HEADER: organization,
                        PROJECT_HEADER: project, API_KEY_HEADER: api_key_id}
        self.fields = {"account": account, "organization": organization, "project": project,
                       "api_key_id": api_key_id}

    def __call__(self, request: _Request) -> _Request:
        for name, value in self.headers.items():
            if value:
                request.headers[name] = value
        request.headers[ASSERTION_HEADER] = assertion(self.key, body=request.content,
                                                      now=time.time(), **self.fields)
        return request
