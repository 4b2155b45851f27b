"""The caller's identity headers: one account (never in an aggregate's namespace), optional
organisation, project and API-key ids (the key kept only as its regional fingerprint), and no
header twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeguards.adapters.csp.identity import (
    Caller,
    IdentityHeaders,
    api_key_fingerprint,
    load_link_key,
)
from safeguards.adapters.csp.messages_api import BadRequest

KEY = bytes(range(32))


def test_reads_the_account_and_the_ids_the_csp_names() -> None:
    headers = IdentityHeaders(KEY)
    caller = headers.caller([
        ("x-csp-account-id", b"acct-1"), ("x-csp-organization-id", b"acme"),
        ("x-csp-project-id", "proj-7"), ("x-csp-api-key-id", b"key-42"), ("accept", b"*/*"),
    ])
    fingerprint = api_key_fingerprint(KEY, "key-42")
    assert caller == Caller("acct-1", "acme", "proj-7", fingerprint)
    assert len(fingerprint) == 32 and "key-42" not in fingerprint
    assert caller.aggregates == ("org:acme", f"key:{fingerprint}")
    assert headers.caller([("x-csp-account-id", b"solo")]) == Caller("solo")
    assert Caller("solo").aggregates == ()
    # another region's key: the same API key, a fingerprint that cannot be joined with this one
    assert api_key_fingerprint(bytes(32), "key-42") != fingerprint


@pytest.mark.parametrize(("pairs", "status", "names"), [
    ([], 401, "missing x-csp-account-id"),
    ([("x-csp-account-id", b"a"), ("x-csp-account-id", b"b")], 400,
     "duplicate x-csp-account-id"),
    ([("x-csp-account-id", b"a"), ("x-csp-organization-id", b"o1"),
      ("x-csp-organization-id", b"o2")], 400, "duplicate x-csp-organization-id"),
    ([("x-csp-account-id", b"org:acme")], 400,
     "may not start with 'org:', 'key:', 'prompt:', 'policy:'"),
    ([("x-csp-account-id", b"key:0123")], 400, "may not start with 'org:', 'key:'"),
    ([("x-csp-account-id", b"prompt:" + b"ab" * 16)], 400, "may not start with"),
    ([("x-csp-account-id", b"policy:eu")], 400, "may not start with"),
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
        IdentityHeaders(KEY).caller(pairs)
    assert raised.value.status == status and names in str(raised.value)
    for _, value in pairs:
        if len(value) > 3:
            assert value.decode("latin-1") not in str(raised.value).replace(names, "")


def test_a_configured_account_header_replaces_the_default() -> None:
    headers = IdentityHeaders(KEY, "X-Tenant")
    assert headers.caller([("x-tenant", b"t1"), ("x-csp-account-id", b"ignored")]).account == "t1"
    with pytest.raises(ValueError, match="cannot be"):
        IdentityHeaders(KEY, "x-csp-organization-id")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        IdentityHeaders(b"short")


def test_a_regions_link_key_is_made_once_and_shared_by_its_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEGUARDS_LINK_KEY_EU", raising=False)
    first = load_link_key("eu", tmp_path)
    assert load_link_key("eu", tmp_path) == first and len(first) == 32
    assert (tmp_path / "link-eu.key").stat().st_mode & 0o777 == 0o600
    assert load_link_key("us", tmp_path) != first
    monkeypatch.setenv("SAFEGUARDS_LINK_KEY_EU", "ab" * 32)
    assert load_link_key("eu", tmp_path) == bytes([0xAB]) * 32
    monkeypatch.setenv("SAFEGUARDS_LINK_KEY_EU", "ab" * 8)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_link_key("eu", tmp_path)
