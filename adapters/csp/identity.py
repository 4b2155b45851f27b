"""Who a request is from: the identity headers the CSP's front door sets on every request.

The account header (``x-csp-account-id`` unless configured otherwise) is required; the
organisation, project and API-key ids are optional and documented in the README. Each may
appear at most once: a request that names two accounts (or two organisations) is ambiguous and
refused, whichever front end sees it, rather than one front end taking the first value and
another the last. Values are printable ASCII; an account id may not use an aggregate's reserved
prefix (``org:``, ``key:``, ``prompt:``). Error messages name the header, never echo its value.

The API key's id is never stored, sent or logged: what is kept and compared is its regional
fingerprint, an HMAC-SHA256 of the id under the region's link key (``link_key``), so two
accounts sharing a key are linked without the key's id being stored, and fingerprints from
different regions cannot be joined. The same key makes the prompts' link keys
(``core.prompt_links``, under another domain tag), so the same holds for them. The id stays on
the :class:`Caller` for the request's life only, so that a gate serving an account homed in
another region fingerprints it under the home's key (``Caller.keyed_for``), as the home does:
one account, one set of identifiers in its one history, whichever region served it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from safeguards.adapters.csp.decision import aggregates_of
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.keyfiles import read_or_make, state_dir
from safeguards.core.errors import InvalidAccountId
from safeguards.core.ids import organization_entity, validate_account_id, validate_caller_account_id

log = logging.getLogger(__name__)

ACCOUNT_HEADER = "x-csp-account-id"
ORGANIZATION_HEADER = "x-csp-organization-id"
PROJECT_HEADER = "x-csp-project-id"
API_KEY_HEADER = "x-csp-api-key-id"


@dataclass(frozen=True, slots=True)
class Caller:
    """The account a request is charged to, and the organisation, project and API key (by its
    fingerprint) the CSP named with it (None where it named none)."""

    account: str
    organization_id: str | None = None
    project_id: str | None = None
    api_key_fingerprint: str | None = None
    # the API key's id, in memory for this request only (see the module's docstring)
    api_key_id: str | None = field(default=None, repr=False, compare=False)

    @property
    def aggregates(self) -> tuple[str, ...]:
        """The entity ids of its organisation and API key (their own histories)."""
        return aggregates_of(self.organization_id, self.api_key_fingerprint)

    def keyed_for(self, link_key: bytes) -> Caller:
        """This caller with its API key fingerprinted under ``link_key`` (its home region's)."""
        if self.api_key_id is None:
            return self
        return replace(self, api_key_fingerprint=api_key_fingerprint(link_key, self.api_key_id))


def api_key_fingerprint(link_key: bytes, api_key_id: str) -> str:
    return hmac.new(link_key, b"api-key\x1f" + api_key_id.encode("ascii"),
                    hashlib.sha256).hexdigest()[:32]


def load_link_key(region: str, directory: Path | None = None) -> bytes:
    """The region's link key: ``SAFEGUARDS_LINK_KEY_<REGION>`` (hex, >= 32 bytes) where set, else
    a key kept in ``<directory>/link-<region>.key`` (``$SAFEGUARDS_STATE_DIR`` or ``./var/keys``),
    made on first use with owner-only permissions, so every process of the region agrees."""
    raw = os.environ.get(f"SAFEGUARDS_LINK_KEY_{region.upper()}")
    if raw:
        key = bytes.fromhex(raw)
        if len(key) < 32:
            raise ValueError(f"SAFEGUARDS_LINK_KEY_{region.upper()} must hold at least 32 bytes")
        return key
    path = state_dir(directory) / f"link-{region}.key"
    text = read_or_make(path, secrets.token_hex(32), f"the {region} region's link key")
    key = bytes.fromhex(text)
    if len(key) < 32:
        raise ValueError(f"{path} must hold at least 32 bytes of hex")
    return key


def peer_link_key(region: str, directory: Path | None = None) -> bytes | None:
    """Another region's link key where this process was given it (``SAFEGUARDS_LINK_KEY_<R>``
    or its key file in the state folder), as it holds that region's forwarding keys; None where
    it was not (never made here: a key of our own making would key that region's accounts
    wrongly). Without it, an account homed there is keyed under this region's key."""
    if os.environ.get(f"SAFEGUARDS_LINK_KEY_{region.upper()}") or (
            state_dir(directory) / f"link-{region}.key").exists():
        return load_link_key(region, directory)
    return None


class IdentityHeaders:
    """Reads a :class:`Caller` from a request's headers (names compared in lower case)."""

    def __init__(self, link_key: bytes, account_header: str = ACCOUNT_HEADER) -> None:
        if len(link_key) < 32:
            raise ValueError("the link key must hold at least 32 bytes")
        self.link_key = link_key
        self.account_header = account_header.lower()
        if self.account_header in (ORGANIZATION_HEADER, PROJECT_HEADER, API_KEY_HEADER):
            raise ValueError(f"the account header cannot be {self.account_header!r}")
        self.names = frozenset((self.account_header, ORGANIZATION_HEADER, PROJECT_HEADER,
                                API_KEY_HEADER))
        self.raw_names = frozenset(n.encode("latin-1") for n in self.names)

    def caller(self, headers: Iterable[tuple[str, bytes | str]]) -> Caller:
        """``headers``: (lower-case name, raw value) pairs; names outside ours are ignored."""
        found: dict[str, bytes | str] = {}
        for name, value in headers:
            if name not in self.names:
                continue
            if name in found:
                raise BadRequest(400, f"duplicate {name} header: the caller is ambiguous")
            found[name] = value
        raw_account = found.get(self.account_header)
        if raw_account is None:
            raise BadRequest(401, f"missing {self.account_header} header")
        account = _checked(self.account_header, raw_account, validate_caller_account_id)
        organization = found.get(ORGANIZATION_HEADER)
        project = found.get(PROJECT_HEADER)
        raw_key = found.get(API_KEY_HEADER)
        api_key = None if raw_key is None else _checked(API_KEY_HEADER, raw_key,
                                                         validate_account_id)
        return Caller(
            account,
            None if organization is None else _checked(
                ORGANIZATION_HEADER, organization, _organization_id),
            None if project is None else _checked(PROJECT_HEADER, project, validate_account_id),
            None if api_key is None else api_key_fingerprint(self.link_key, api_key),
            api_key,
        )


def _organization_id(text: str) -> str:
    organization_entity(text)  # validates it as the entity id it will become
    return text


def _checked(header: str, raw: bytes | str, validate: Callable[[str], str]) -> str:
    try:
        return validate(raw.decode("ascii") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise BadRequest(400, f"invalid {header} header: not ASCII") from None
    except InvalidAccountId as exc:
        raise BadRequest(400, f"invalid {header} header: {exc}") from None
