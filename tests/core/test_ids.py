"""Account ids at the edge, and subject tokens no account id can break."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeguards.core.errors import InvalidAccountId
from safeguards.core.ids import (
    account_from_token,
    partition_of,
    subject_token,
    validate_account_id,
)
from safeguards.core.subjects import enforce_subject, inputs_subject

from strategies import account_ids


@given(account_ids)
def test_tokens_are_subject_safe_and_reversible(account: str) -> None:
    token = subject_token(account)
    assert not set(token) & set(".*> \t\r\n")
    assert account_from_token(token) == account
    subject = inputs_subject("eu", 16, account)
    assert subject.count(".") == 4 and subject.endswith(token)
    assert enforce_subject("eu", account) == f"sg.eu.enforce.{token}"


@given(st.text(min_size=1, max_size=50))
def test_partition_is_stable_and_in_range(account: str) -> None:
    assert 0 <= partition_of(account, 16) < 16
    assert partition_of(account, 16) == partition_of(account, 16)


def test_known_partition_is_stable_across_builds() -> None:
    # A silent change of the partition hash would move every account to another partition.
    assert partition_of("acct-0", 1_000_003) == 426_268


@pytest.mark.parametrize(("bad", "why"), [
    ("", "empty"),
    ("a" * 129, "129 characters"),
    ("has space", "printable ASCII"),
    ("tab\there", "printable ASCII"),
    ("ünïcode", "printable ASCII"),
    (42, "must be a string"),
])
def test_bad_account_ids_are_refused_with_a_reason(bad: object, why: str) -> None:
    with pytest.raises(InvalidAccountId, match=why):
        validate_account_id(bad)


def test_wildcards_are_escaped() -> None:
    assert subject_token("a.b*c>d") == "a~2Eb~2Ac~3Ed"
