"""Who a request is from: the identity headers the CSP's front door sets on every request.

The account header (``x-csp-account-id`` unless configured otherwise) is required; the
organisation, project and API-key ids are optional and documented in the README. Each may
appear at most once: a request that names two accounts (or two organisations) is ambiguous and
refused, whichever front end sees it, rather than one front end taking the first value and
another the last. Values are printable ASCII; an account id may not use the organisations'
reserved ``org:`` prefix. Error messages name the header, never echo its value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from safeguards.adapters.csp.wire import BadRequest
from safeguards.core.errors import InvalidAccountId
from safeguards.core.ids import (
    ORGANIZATION_PREFIX,
    organization_entity,
    validate_account_id,
    validate_caller_account_id,
)

ACCOUNT_HEADER = "x-csp-account-id"
ORGANIZATION_HEADER = "x-csp-organization-id"
PROJECT_HEADER = "x-csp-project-id"
API_KEY_HEADER = "x-csp-api-key-id"


@dataclass(frozen=True, slots=True)
class Caller:
    """The account a request is charged to, and the organisation, project and API key the CSP
    named with it (None where it named none)."""

    account: str
    organization_id: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None

    @property
    def organization(self) -> str | None:
        """The organisation's entity id (its own history and enforcement)."""
        return None if self.organization_id is None else ORGANIZATION_PREFIX + self.organization_id


class IdentityHeaders:
    """Reads a :class:`Caller` from a request's headers (names compared in lower case)."""

    def __init__(self, account_header: str = ACCOUNT_HEADER) -> None:
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
        api_key = found.get(API_KEY_HEADER)
        return Caller(
            account,
            None if organization is None else _checked(
                ORGANIZATION_HEADER, organization, _organization_id),
            None if project is None else _checked(PROJECT_HEADER, project, validate_account_id),
            None if api_key is None else _checked(API_KEY_HEADER, api_key, validate_account_id),
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
