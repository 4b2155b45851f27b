"""The caller's identity headers: one account (never in the organisations' namespace), optional
organisation, project and API-key ids, and no header twice."""

from __future__ import annotations

import pytest

from safeguards.adapters.csp.identity import Caller, IdentityHeaders
from safeguards.adapters.csp.wire import BadRequest


def test_reads_the_account_and_the_ids_the_csp_names() -> None:
    headers = IdentityHeaders()
    caller = headers.caller([
        ("x-csp-account-id", b"acct-1"), ("x-csp-organization-id", b"acme"),
        ("x-csp-project-id", "proj-7"), ("x-csp-api-key-id", b"key-42"), ("accept", b"*/*"),
    ])
    assert caller == Caller("acct-1", "acme", "proj-7", "key-42")
    assert caller.organization == "org:acme"
    assert headers.caller([("x-csp-account-id", b"solo")]) == Caller("solo")
    assert Caller("solo").organization is None


@pytest.mark.parametrize(("pairs", "status", "names"), [
    ([], 401, "missing x-csp-account-id"),
    ([("x-csp-account-id", b"a"), ("x-csp-account-id", b"b")], 400,
     "duplicate x-csp-account-id"),
    ([("x-csp-account-id", b"a"), ("x-csp-organization-id", b"o1"),
      ("x-csp-organization-id", b"o2")], 400, "duplicate x-csp-organization-id"),
    ([("x-csp-account-id", b"org:acme")], 400, "may not start with 'org:'"),
    ([("x-csp-account-id", b"a"), ("x-csp-organization-id", b"has space")], 400,
     "invalid x-csp-organization-id"),
    ([("x-csp-account-id", b"a"), ("x-csp-organization-id", b"o" * 125)], 400,
     "the limit is 124"),
    ([("x-csp-account-id", "caf\u00e9".encode())], 400, "not ASCII"),
    ([("x-csp-account-id", b"a"), ("x-csp-api-key-id", b"")], 400, "invalid x-csp-api-key-id"),
])
def test_ambiguous_or_invalid_identity_is_refused_without_echoing_it(
        pairs: list[tuple[str, bytes]], status: int, names: str) -> None:
    with pytest.raises(BadRequest) as raised:
        IdentityHeaders().caller(pairs)
    assert raised.value.status == status and names in str(raised.value)
    for _, value in pairs:
        if len(value) > 3:
            assert value.decode("latin-1") not in str(raised.value).replace(names, "")


def test_a_configured_account_header_replaces_the_default() -> None:
    headers = IdentityHeaders("X-Tenant")
    assert headers.caller([("x-tenant", b"t1"), ("x-csp-account-id", b"ignored")]).account == "t1"
    with pytest.raises(ValueError, match="cannot be"):
        IdentityHeaders("x-csp-organization-id")
