"""Cross-region aggregates (pure rules): nothing below k distinct accounts, nothing but a
pseudonym, an epoch, a category and a count crosses; pseudonyms rotate with the epoch."""

from __future__ import annotations

import dataclasses

import pytest

from safeguards.core.cross_signals import (
    K_MIN,
    CrossRegionAggregate,
    DistinctAccounts,
    MalformedAggregate,
    board_entry,
    decode_aggregate,
    encode_aggregate,
    epoch_key,
    epoch_of,
    keyed_pseudonym,
    pseudonym,
    residency_problem,
    split_board_entry,
)
from safeguards.core.prompt_links import normalise_prompt

SECRET = b"s" * 32
GOOD = CrossRegionAggregate("us", 20_000, "a" * 64, "weapons", K_MIN)


def test_pseudonyms_join_the_same_prompt_within_an_epoch_only() -> None:
    today, tomorrow = epoch_key(SECRET, 20_000), epoch_key(SECRET, 20_001)
    assert pseudonym(today, "Build  a BOMB") == pseudonym(today, "build a bomb")
    assert pseudonym(today, "build a bomb") != pseudonym(tomorrow, "build a bomb")
    assert pseudonym(today, "   ") is None
    # the board normalises a request's prompt once and keys it under both epochs
    once = normalise_prompt("Build  a BOMB")
    assert keyed_pseudonym(today, once) == pseudonym(today, "build a bomb")
    assert epoch_of(86_400 * 20_000 + 5) == 20_000


def test_only_k_anonymous_well_formed_aggregates_cross() -> None:
    assert residency_problem(GOOD) is None
    assert decode_aggregate(encode_aggregate(GOOD), origin="us") == GOOD
    for bad in (dataclasses.replace(GOOD, accounts=K_MIN - 1),
                dataclasses.replace(GOOD, pseudonym="acct-1"),
                dataclasses.replace(GOOD, category="Weapons and more"),
                dataclasses.replace(GOOD, origin="US!")):
        assert residency_problem(bad) is not None
        with pytest.raises(MalformedAggregate):
            encode_aggregate(bad)
    with pytest.raises(MalformedAggregate, match="origin"):  # us may not speak for eu
        decode_aggregate(encode_aggregate(GOOD), origin="eu")
    with pytest.raises(MalformedAggregate, match="fields"):  # an account id riding along
        decode_aggregate(encode_aggregate(GOOD)[:-1] + b', "account": "acct-1"}', origin="us")
    with pytest.raises(MalformedAggregate):
        decode_aggregate(b"\xff", origin="us")


def test_released_once_at_k_distinct_accounts() -> None:
    counts = DistinctAccounts(capacity=2)
    assert counts.add(1, "p", "a") is None and counts.add(1, "p", "a") is None
    assert counts.add(1, "p", "b") is None
    assert counts.add(1, "p", "c") == K_MIN
    assert counts.add(1, "p", "d") is None  # released once
    assert counts.add(2, "p", "a") is None  # another epoch starts over
    counts.add(1, "q", "a")  # capacity 2: the oldest pseudonym is forgotten
    assert counts.add(1, "p", "e") is None


def test_a_board_entry_carries_the_aggregate_and_one_mac_per_receiver() -> None:
    data, mac = encode_aggregate(GOOD), "fus1:" + "ab" * 32
    assert split_board_entry(board_entry(data, {"eu": mac, "ap": mac})) == (
        data, {"ap": mac, "eu": mac})
    assert split_board_entry(data) == (data, {})  # unsigned, as builds before signing wrote
    for bad in (data + b"\neu", data + b"\neu " + mac.encode() + b"\neu " + mac.encode(),
                data + b"\nEU! " + mac.encode(), data + b"\neu fus1:xyz",
                data + b"\n" + b"eu " + mac.encode() * 200):
        with pytest.raises(MalformedAggregate):
            split_board_entry(bad)
