"""The EventStore contract: one suite, every backend (see ``store`` in this folder's conftest)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest

from safeguards.core import codec
from safeguards.core import state as fold_module
from safeguards.core.errors import (
    ConcurrencyConflict,
    InvalidAccountId,
    InvalidInput,
    ResidencyViolation,
)
from safeguards.core.events import Event, RequestObserved
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.state import fold, initial_state

from store_events import SNAPSHOT_EVERY, T0, StoreUnderTest, make_event, make_request


async def _fill(store: StoreUnderTest, account: str, count: int, per_append: int = 1) -> None:
    version = 0
    while version < count:
        n = min(per_append, count - version)
        await store.append(make_request(account, store.region, version, n))
        version += n


async def _nothing_written(store: StoreUnderTest, account: str, version: int,
                           feed_len: int, key: str | None) -> None:
    assert len(await store.history(account)) == version
    assert len(await store.read_feed(0, 10_000)) == feed_len
    assert await store.pending_outbox(100) == []
    if key is not None:
        assert not await store.inbox_contains(key)


async def test_append_then_load_folds_every_event(store: StoreUnderTest) -> None:
    r1 = make_request("acct-1", store.region, 0, 3)
    r2 = make_request("acct-1", store.region, 3, 4)
    assert await store.append(r1) == AppendResult("acct-1", 3)
    assert await store.append(r2) == AppendResult("acct-1", 7)
    expected = fold(initial_state("acct-1", store.region), [*r1.events, *r2.events])
    assert await store.load("acct-1") == expected
    assert await store.history("acct-1") == [*r1.events, *r2.events]
    assert await store.load("nobody") == initial_state("nobody", store.region)


async def test_stale_expected_version_conflicts_and_writes_nothing(store: StoreUnderTest) -> None:
    await store.append(make_request("a", store.region, 0, 2))
    for expected in (0, 1, 5):  # behind, behind, ahead (would leave a gap)
        with pytest.raises(ConcurrencyConflict) as info:
            await store.append(make_request("a", store.region, expected, 1,
                                            inbox_key=f"k{expected}", outbox=1, tag="x"))
        assert info.value.actual_version == 2
        assert info.value.retryable
        await _nothing_written(store, "a", 2, 2, f"k{expected}")


async def test_duplicate_inbox_key_writes_nothing(store: StoreUnderTest) -> None:
    first = make_request("a", store.region, 0, 2, inbox_key="signal-1", outbox=1)
    assert await store.append(first) == AppendResult("a", 2)
    assert await store.inbox_contains("signal-1")
    (pending,) = await store.pending_outbox(10)
    await store.mark_published([pending.outbox_id])
    # A redelivery decided on the old version, and one decided on the new: both are duplicates.
    for expected in (0, 2):
        again = make_request("a", store.region, expected, 2, inbox_key="signal-1", outbox=1,
                             tag="again")
        assert await store.append(again) == AppendResult("a", 2, duplicate=True)
    await _nothing_written(store, "a", 2, 2, None)


async def test_residency_violation_writes_nothing(store: StoreUnderTest) -> None:
    foreign = "zz" if store.region != "zz" else "yy"
    request = make_request("a", foreign, 0, 2, inbox_key="k", outbox=1)
    with pytest.raises(ResidencyViolation) as info:
        await store.append(request)
    assert info.value.store_region == store.region and info.value.event_region == foreign
    with pytest.raises(ResidencyViolation):
        await store.append_batch([make_request("b", store.region, 0, 1), request])
    await _nothing_written(store, "a", 0, 0, "k")
    await _nothing_written(store, "b", 0, 0, None)


async def test_bad_requests_are_refused_before_any_write(store: StoreUnderTest) -> None:
    r = store.region
    good = make_event("a", r, 1)
    bad: list[tuple[AppendRequest, type[Exception]]] = [
        (AppendRequest("bad id", 0, ()), InvalidAccountId),
        (AppendRequest("", 0, ()), InvalidAccountId),
        (AppendRequest("a", -1, ()), InvalidInput),
        (AppendRequest("a", 0, (make_event("a", r, 2),)), InvalidInput),  # version gap
        (AppendRequest("a", 0, (good, good)), InvalidInput),  # repeated version
        (AppendRequest("a", 0, (make_event("b", r, 1),)), InvalidInput),  # other account
        (AppendRequest("a", 0, (good,), inbox_key=""), InvalidInput),
        (AppendRequest("a", 0, (make_event("a", r, 1, tag="\x00"),)), InvalidInput),
    ]
    for request, error in bad:
        with pytest.raises(error):
            await store.append(request)
    await _nothing_written(store, "a", 0, 0, None)


async def test_unencodable_body_refuses_the_batch(store: StoreUnderTest) -> None:
    good = make_request("a", store.region, 0, 2, inbox_key="k")
    broken = make_event("b", store.region, 1)
    broken = Event(**{**{f: getattr(broken, f) for f in broken.__dataclass_fields__},
                      "body": RequestObserved("r", "m", "proxy", 1, 2, 3, "0" * 64, False,
                                              object())})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="cannot be encoded"):
        await store.append_batch([good, AppendRequest("b", 0, (broken,))])
    await _nothing_written(store, "a", 0, 0, "k")


async def test_reused_event_id_conflicts_alone_in_a_batch(store: StoreUnderTest) -> None:
    await store.append(make_request("a", store.region, 0, 1))
    reused = make_event("b", store.region, 1)
    reused = Event(**{**{f: getattr(reused, f) for f in reused.__dataclass_fields__},
                      "event_id": "a/1"})
    results = await store.append_batch([
        make_request("c", store.region, 0, 2, inbox_key="kc"),
        AppendRequest("b", 0, (reused,), inbox_key="kb"),
    ])
    assert results[0] == AppendResult("c", 2)
    assert isinstance(results[1], ConcurrencyConflict)
    assert await store.history("b") == []
    assert not await store.inbox_contains("kb")
    assert await store.inbox_contains("kc")
    assert [e.event.event_id for e in await store.read_feed(0, 100)] == ["a/1", "c/1", "c/2"]


async def test_event_id_reused_within_a_batch_fails_only_its_request(
    store: StoreUnderTest,
) -> None:
    first = make_request("a", store.region, 0, 1)
    clash = make_event("b", store.region, 1)
    clash = Event(**{**{f: getattr(clash, f) for f in clash.__dataclass_fields__},
                     "event_id": first.events[0].event_id})
    twice = make_event("c", store.region, 2)
    twice = Event(**{**{f: getattr(twice, f) for f in twice.__dataclass_fields__},
                     "event_id": "c/1"})
    results = await store.append_batch([
        first, AppendRequest("b", 0, (clash,)),
        AppendRequest("c", 0, (make_event("c", store.region, 1), twice)),
        make_request("d", store.region, 0, 1),
    ])
    assert results[0] == AppendResult("a", 1) and results[3] == AppendResult("d", 1)
    assert isinstance(results[1], ConcurrencyConflict)
    assert isinstance(results[2], ConcurrencyConflict)
    assert [e.position for e in await store.read_feed(0, 10)] == [1, 2]
    assert await store.account_ids() == ["a", "d"]


async def test_append_batch_requests_succeed_or_fail_on_their_own(store: StoreUnderTest) -> None:
    r = store.region
    await store.append(make_request("b", r, 0, 1))
    await store.append(make_request("c", r, 0, 1, inbox_key="seen"))
    results = await store.append_batch([
        make_request("a", r, 0, 2, inbox_key="ka", outbox=1),
        make_request("b", r, 0, 1, inbox_key="kb", outbox=1),  # stale: b is at 1
        make_request("c", r, 0, 1, inbox_key="seen", tag="dup"),  # duplicate
        make_request("a", r, 2, 1, inbox_key="ka2"),  # follows the batch's own first request
        make_request("d", r, 0, 1, inbox_key="ka"),  # key used earlier in this batch
        make_request("e", r, 0, 0, inbox_key="ke"),  # no events: only the key is recorded
    ])
    assert results[0] == AppendResult("a", 2)
    assert isinstance(results[1], ConcurrencyConflict) and results[1].actual_version == 1
    assert results[2] == AppendResult("c", 1, duplicate=True)
    assert results[3] == AppendResult("a", 3)
    assert results[4] == AppendResult("d", 0, duplicate=True)
    assert results[5] == AppendResult("e", 0)
    assert [e.version for e in await store.history("a")] == [1, 2, 3]
    assert len(await store.history("b")) == 1 and await store.history("d") == []
    assert not await store.inbox_contains("kb")
    assert await store.inbox_contains("ke") and await store.inbox_contains("ka2")
    assert [p.message.message_id for p in await store.pending_outbox(10)] == ["msg-a-0-0"]
    assert await store.append_batch([]) == []


async def test_history_by_version_and_time(store: StoreUnderTest) -> None:
    await _fill(store, "a", 12, per_append=4)
    full = await store.history("a")
    assert [e.version for e in full] == list(range(1, 13))
    assert [e.version for e in await store.history("a", from_version=3, to_version=5)] == [3, 4, 5]
    since, until = T0 + timedelta(seconds=4), T0 + timedelta(seconds=6)
    assert [e.version for e in await store.history("a", since=since, until=until)] == [4, 5, 6]
    assert [e.version for e in await store.history("a", from_version=5, since=since,
                                                   until=until)] == [5, 6]
    assert await store.history("a", from_version=13) == []
    with pytest.raises(InvalidInput):
        await store.history("a", from_version=0)
    with pytest.raises(InvalidInput):
        await store.history("a", since=since.replace(tzinfo=None))


async def test_state_at_version_and_time(store: StoreUnderTest) -> None:
    await _fill(store, "a", 12, per_append=3)
    events = await store.history("a")
    start = initial_state("a", store.region)
    for version in (0, 1, 4, 5, 6, 11, 12):
        assert await store.state_at("a", version=version) == fold(start, events[:version])
    assert await store.state_at("a", version=99) == fold(start, events)
    assert await store.state_at("a", at=T0 + timedelta(seconds=7)) == fold(start, events[:7])
    assert await store.state_at("a", at=T0 + timedelta(seconds=7, milliseconds=500)) == fold(
        start, events[:7])
    assert await store.state_at("a", at=T0) == start
    for kwargs in ({}, {"version": 1, "at": T0}, {"version": -1}):
        with pytest.raises(InvalidInput):
            await store.state_at("a", **kwargs)  # type: ignore[arg-type]


async def test_feed_is_dense_ordered_and_pages(store: StoreUnderTest) -> None:
    await store.append(make_request("a", store.region, 0, 2))
    await store.append_batch([make_request("b", store.region, 0, 3),
                              make_request("c", store.region, 0, 1)])
    await store.append(make_request("a", store.region, 2, 1))
    entries = await store.read_feed(0, 100)
    assert [e.position for e in entries] == list(range(1, 8))
    assert [(e.event.account_id, e.event.version) for e in entries] == [
        ("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("c", 1), ("a", 3)]
    assert await store.read_feed(2, 3) == entries[2:5]
    assert await store.read_feed(7, 10) == []
    with pytest.raises(InvalidInput):
        await store.read_feed(0, 0)


async def test_outbox_attempts_and_publishing(store: StoreUnderTest) -> None:
    await store.append(make_request("a", store.region, 0, 1, outbox=2))
    await store.append(make_request("b", store.region, 0, 1, outbox=1))
    first = await store.pending_outbox(2)
    assert [p.message.message_id for p in first] == ["msg-a-0-0", "msg-a-0-1"]
    assert [p.attempts for p in first] == [1, 1]
    assert first[0].message.payload == b"\x81\xa1v\x01"
    again = await store.pending_outbox(10)
    assert [p.attempts for p in again] == [2, 2, 1]
    await store.mark_published([first[0].outbox_id, first[1].outbox_id])
    await store.mark_published([])
    (left,) = await store.pending_outbox(10)
    assert left.message.message_id == "msg-b-0-0"
    await store.mark_published_messages(["msg-b-0-0", "msg-a-0-0", "never-written"])
    await store.mark_published_messages([])
    assert await store.pending_outbox(10) == []
    published = await store.latest_published(10)
    assert sorted(m.message_id for m in published) == ["msg-a-0-1", "msg-b-0-0"]


async def test_account_ids_are_listed_in_order_and_paged(store: StoreUnderTest) -> None:
    names = ["b", "a", "Z", "a-1", "b/2", "c~"]
    for name in names:
        await store.append(make_request(name, store.region, 0, 1))
    await store.append(make_request("empty", store.region, 0, 0, inbox_key="k"))
    ordered = sorted(names)  # byte order, whatever the database's locale
    assert await store.account_ids() == ordered
    assert await store.account_ids(limit=2) == ordered[:2]
    assert await store.account_ids(after=ordered[1], limit=3) == ordered[2:5]


async def test_snapshots_are_written_every_n_events(store: StoreUnderTest) -> None:
    await _fill(store, "a", 3 * SNAPSHOT_EVERY + 2, per_append=3)
    # Appends of 3 cross the multiples of 5 at versions 6, 12 and 15.
    assert await store.snapshot_versions("a") == [6, 12, 15]
    history = await store.history("a")
    assert await store.load("a") == fold(initial_state("a", store.region), history)
    # A snapshot already stored at a version stays: a second one there is ignored.
    at_six = await store.state_at("a", version=6)
    await store.save_snapshot(type(at_six)(**{**{f: getattr(at_six, f)
                                                 for f in at_six.__dataclass_fields__},
                                              "level_reason": "second"}))
    assert await store.state_at("a", version=6) == at_six == fold(
        initial_state("a", store.region), history[:6])


async def test_load_uses_snapshot_and_discards_it_when_the_fold_changes(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store, "a", 3)
    truth = fold(initial_state("a", store.region), await store.history("a"))
    # A snapshot that disagrees with the events shows whether load reads it or not.
    planted = initial_state("a", store.region)
    planted = type(planted)(**{**{f: getattr(truth, f) for f in truth.__dataclass_fields__},
                               "level": 4, "level_reason": "planted"})
    await store.save_snapshot(planted)
    assert (await store.load("a")).level_reason == "planted"
    assert (await store.state_at("a", version=2)) == fold(initial_state("a", store.region),
                                                          (await store.history("a"))[:2])
    monkeypatch.setattr(fold_module, "FOLD_VERSION", fold_module.FOLD_VERSION + 1)
    monkeypatch.setattr(codec, "FOLD_VERSION", fold_module.FOLD_VERSION)
    assert await store.load("a") == truth
    assert await store.snapshot_versions("a") == []
    await store.append(make_request("a", store.region, 3, 2))  # crosses 5: a new-fold snapshot
    assert await store.snapshot_versions("a") == [5]


async def test_load_many_is_load_of_each(store: StoreUnderTest) -> None:
    await _fill(store, "short", 2)
    await _fill(store, "long", 2 * SNAPSHOT_EVERY + 3, per_append=2)  # snapshots, then a tail
    await _fill(store, "planted", 3)
    truth = await store.load("planted")
    planted = type(truth)(**{**{f: getattr(truth, f) for f in truth.__dataclass_fields__},
                             "level_reason": "planted"})
    await store.save_snapshot(planted)  # load_many reads snapshots as load does
    accounts = ["long", "nobody", "short", "planted", "short"]
    many = await store.load_many(accounts)
    assert set(many) == set(accounts)
    for account in accounts:
        assert many[account] == await store.load(account), account
    assert many["planted"].level_reason == "planted"
    assert many["nobody"] == initial_state("nobody", store.region)
    assert await store.load_many([]) == {}
    with pytest.raises(InvalidAccountId):
        await store.load_many(["ok", "bad id"])


async def test_concurrent_writers_one_winner_per_version(store: StoreUnderTest) -> None:
    writers, attempts = 10, 100
    wins: dict[int, int] = {}
    conflicts = 0

    async def writer(w: int) -> None:
        nonlocal conflicts
        known = 0
        for i in range(attempts):
            request = AppendRequest("hot", known, (make_event("hot", store.region, known + 1,
                                                              tag=f"-w{w}-{i}"),))
            try:
                result = await store.append(request)
            except ConcurrencyConflict as conflict:
                conflicts += 1
                assert conflict.actual_version is not None
                known = conflict.actual_version
            else:
                assert result.version not in wins
                wins[result.version] = w
                known = result.version
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)
    history = await store.history("hot")
    assert [e.version for e in history] == list(range(1, len(wins) + 1))
    assert sorted(wins) == [e.version for e in history]
    for event in history:  # the stored event at each version is the winner's
        assert f"-w{wins[event.version]}-" in event.event_id
    assert len(wins) + conflicts == writers * attempts
    assert conflicts > 0 and wins  # the writers did race


async def test_state_after_feeds_snapshots_and_a_mismatched_one_is_ignored(
        store: StoreUnderTest) -> None:
    import dataclasses

    first = make_request("a", store.region, 0, SNAPSHOT_EVERY - 1)
    await store.append(first)
    truth = fold(initial_state("a", store.region), first.events)
    second = make_request("a", store.region, SNAPSHOT_EVERY - 1, 2)
    after = fold(truth, second.events)
    # The writer's own fold is what the snapshot holds (marked, to see that it was used).
    marked = dataclasses.replace(after, level_reason="writer's fold")
    await store.append(dataclasses.replace(second, state_after=marked))
    # (a store may also fold for itself; either way the state is the fold's)
    assert await store.state_at("a", version=SNAPSHOT_EVERY + 1) in (marked, after)
    # A state_after at the wrong version is not trusted: the store folds for itself.
    third = make_request("a", store.region, SNAPSHOT_EVERY + 1, SNAPSHOT_EVERY)
    wrong = dataclasses.replace(after, level_reason="wrong version")
    await store.append(dataclasses.replace(third, state_after=wrong))
    history = await store.history("a")
    snapshot_at = max(await store.snapshot_versions("a"))
    assert snapshot_at > SNAPSHOT_EVERY + 1
    assert await store.state_at("a", version=snapshot_at) == fold(
        initial_state("a", store.region), history[:snapshot_at])


async def test_latest_published_is_the_newest_published_row_of_each_subject(
        store: StoreUnderTest) -> None:
    assert await store.latest_published(100) == []
    await store.append(make_request("a", store.region, 0, 1, outbox=2))
    await store.append(make_request("b", store.region, 0, 1, outbox=1))
    await store.append(make_request("a", store.region, 1, 1, outbox=1))  # pending: not listed
    rows = await store.pending_outbox(10)
    await store.mark_published([p.outbox_id for p in rows[:3]])
    latest = await store.latest_published(100)
    prefix = f"sg.{store.region}.enforce"
    assert [(m.subject, m.message_id) for m in latest] == [
        (f"{prefix}.a", "msg-a-0-1"), (f"{prefix}.b", "msg-b-0-0")]
    # only the most recent rows are scanned
    assert [m.message_id for m in await store.latest_published(1)] == ["msg-b-0-0"]
    with pytest.raises(InvalidInput):
        await store.latest_published(0)
