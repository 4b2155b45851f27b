"""The review queue query, part of the EventStore contract: every backend (see ``store`` in this
folder's conftest) lists the same open reviews, and they agree with the fold's ``review_level``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from safeguards.core.errors import InvalidInput
from safeguards.core.events import (
    EventBody,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
)
from safeguards.core.ports import AppendRequest, OpenReview

from store_events import T0, StoreUnderTest, body_for, make_event


def _request(level: int = 4) -> ReviewRequested:
    return ReviewRequested(level, f"escalate.points proposes L{level}", "escalate.review", 2)


def _op(action: str, level: int | None = None) -> OperatorActionTaken:
    return OperatorActionTaken("bob", action, level, None, "decided")  # type: ignore[arg-type]


# account -> its events after two ordinary ones (a request and a score)
STORIES: dict[str, list[EventBody]] = {
    # neither a note nor rejecting an action awaiting approval decides the review
    "a-open": [_request(), ReviewClaimed("alice", "mine"), _op("note"), _op("reject", 4)],
    "b-decided": [_request(), ReviewClaimed("alice", "mine"), _op("set_level", 4)],
    "c-reopened": [_request(), _op("set_level", 3), body_for(1), _request(5)],
    "d-never": [_op("set_level", 2), _op("note")],
    "e-cleared": [_request(), _op("clear")],
    "f-raised": [_request(), ReviewClaimed("carol", "mine"), _request(5)],
}


async def _seed(store: StoreUnderTest) -> None:
    for account, story in STORIES.items():
        bodies = [body_for(1), body_for(2), *story]
        events = tuple(make_event(account, store.region, v, body=b)
                       for v, b in enumerate(bodies, start=1))
        await store.append(AppendRequest(account, 0, events))


async def test_open_reviews_lists_undecided_requests_with_their_claims(
        store: StoreUnderTest) -> None:
    assert await store.open_reviews() == []
    await _seed(store)
    at = [T0 + timedelta(seconds=v) for v in range(10)]
    expected = [
        OpenReview("a-open", 3, at[3], 4, "escalate.review", "escalate.points proposes L4",
                   "alice", at[4]),
        OpenReview("c-reopened", 6, at[6], 5, "escalate.review", "escalate.points proposes L5"),
        # a higher proposal is a new question, claimed afresh
        OpenReview("f-raised", 5, at[5], 5, "escalate.review", "escalate.points proposes L5"),
    ]
    assert await store.open_reviews() == expected
    # Pages skip decided accounts however many lie between the open ones.
    assert await store.open_reviews(limit=1) == expected[:1]
    assert await store.open_reviews(after="a-open", limit=1) == expected[1:2]
    assert await store.open_reviews(after="c-reopened") == expected[2:]
    assert await store.open_reviews(after="f-raised") == []


async def test_open_reviews_agree_with_the_fold(store: StoreUnderTest) -> None:
    await _seed(store)
    queued = {r.account_id: r.proposed_level for r in await store.open_reviews()}
    states = await store.load_many(list(STORIES))
    assert queued == {a: s.review_level for a, s in states.items() if s.review_level}


async def test_open_reviews_refuses_a_bad_limit(store: StoreUnderTest) -> None:
    with pytest.raises(InvalidInput):
        await store.open_reviews(limit=0)
