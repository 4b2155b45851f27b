"""A snapshot made by fold 6 (before aggregates recorded their enforcement episodes) carried to
this fold: what an anchor's snapshot needs once its history's older events are gone."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
from linked_region import ORG, Region, request

from safeguards.core import codec
from safeguards.core.aggregate_members import Membership
from safeguards.core.state import FOLD_VERSION, AccountState
from safeguards.core.upcasters import OLDEST_BASE_FOLD, STATE_UPCASTERS

# codec.encode_state of this state by the fold-6 build (c5bb864): an organisation at L2 with two
# members, kept as fold 6 kept them (member_accounts)
FOLD6 = bytes.fromhex(
    "82a4666f6c6406a173de0016aa6163636f756e745f6964a86f72673a61636d65a6726567696f6ea26575a7766572"
    "73696f6e05a56c6576656c02b06c6576656c5f657870697265735f6174c0ac6c6576656c5f726561736f6ea0aa6c"
    "6576656c5f72756c65b26f70657261746f722e7365745f6c6576656cad6c6576656c5f76657273696f6e04b46c65"
    "76656c5f706f6c6963795f76657273696f6ec0a47269736b90a7737472696b657300a8726571756573747300a673"
    "636f72657300a96c6173745f7365656ecf0006622faf0b4400ac6f70656e5f61707065616c7390ae726563656e74"
    "5f636f6e74656e7490a97374726f6e6765737490ac7265766965775f6c6576656c00a56c696e6b7390b070656e64"
    "696e675f617070726f76616cc0ae726563656e745f70726f6d70747390af6d656d6265725f6163636f756e747392"
    "a161a162")
STATE = AccountState(ORG, "eu", version=5, level=2, level_rule="operator.set_level",
                     level_version=4, last_seen=datetime(2026, 12, 9, 9, 0, tzinfo=UTC),
                     membership=Membership(("a", "b")))


def test_a_fold6_snapshot_is_carried_with_its_members_and_no_episode_open() -> None:
    assert codec.decode_state(FOLD6) is None  # plain loads trust this fold's snapshots only
    assert codec.carry_state(FOLD6) == STATE
    assert codec.carry_state(codec.encode_state(STATE)) == STATE


def test_every_fold_that_may_have_written_a_retention_base_is_carried_to_this_one() -> None:
    # a FOLD_VERSION bump without a STATE_UPCASTERS step would leave every truncated history
    # unreadable (quarantined) after the deploy
    missing = [f for f in range(OLDEST_BASE_FOLD, FOLD_VERSION) if f not in STATE_UPCASTERS]
    assert missing == [], f"no snapshot upcaster from fold {missing}"


def test_a_fold_no_upcaster_reaches_is_not_carried() -> None:
    older = msgpack.unpackb(FOLD6)
    older["fold"] = 5
    assert codec.carry_state(msgpack.packb(older)) is None
    assert codec.carry_state(msgpack.packb({"fold": True, "s": older["s"]})) is None
    assert codec.carry_state(msgpack.packb([1, 2])) is None


def test_the_carried_aggregates_next_decision_tells_its_members() -> None:
    carried = codec.carry_state(FOLD6)
    assert carried is not None
    r = Region()
    r.states[ORG] = carried
    r.histories[ORG] = []
    r.send(request("c", 1))  # c links: the organisation decides, at L2 with no episode open
    assert [r.level(m) for m in "abc"] == [1, 1, 1]
