"""Erasure by crypto-shredding (``core.erasure``): the data-key port's contract (in memory and
PostgreSQL), and erasure in both event stores: after ``erase`` no personal value of the account
is anywhere in its region's database, its history still folds, explains and verifies, and the
tombstone says who erased it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import asyncpg
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.chain_keys import load_chain_key
from safeguards.adapters.store.keys import InMemoryFieldSealer, PostgresFieldSealer
from safeguards.adapters.store.sealing import Sealing, open_body, seal_map
from safeguards.core import codec
from safeguards.core.chain import verify
from safeguards.core.codec import decode_command, encode_command, encode_signal
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.erasure import ERASED, AccountErased, erased_names
from safeguards.core.errors import InvalidInput, SealBroken
from safeguards.core.events import (
    AccountLinked,
    AppealFiled,
    EnforcementChanged,
    Event,
    EventBody,
    MemberLinked,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    Signal,
    StrikeRecorded,
)
from safeguards.core.ports import AppendRequest, FieldSealer, OutboxMessage
from safeguards.core.state import fold, initial_state
from safeguards.core.subjects import enforce_subject
from safeguards.ops.explain import explain, render

from store_events import T0, StoreUnderTest, create_database, make_event

# --- the FieldSealer port: one contract, both implementations ------------------------------


@pytest.fixture(params=["memory", "postgres"])
async def sealer(request: pytest.FixtureRequest) -> AsyncIterator[FieldSealer]:
    if request.param == "memory":
        yield InMemoryFieldSealer("eu")
        return
    url = await create_database(request.getfixturevalue("postgres_server").admin_url)
    await migrate(url)
    store = PostgresEventStore("eu", url)
    try:
        yield PostgresFieldSealer(store)
    finally:
        await store.close()


async def test_sealed_values_open_for_their_account_and_label_only(sealer: FieldSealer) -> None:
    sealed = await sealer.seal("acct-1", "RequestObserved:organization_id", b"org-secret")
    assert b"org-secret" not in sealed
    assert await sealer.open("acct-1", "RequestObserved:organization_id", sealed) == b"org-secret"
    again = await sealer.seal("acct-1", "RequestObserved:organization_id", b"org-secret")
    assert again != sealed  # a fresh nonce each time
    with pytest.raises(SealBroken):
        await sealer.open("acct-1", "ScoreRecorded:content_sha256", sealed)
    other = await sealer.seal("acct-2", "x", b"y")  # acct-2 has its own key now
    # not under acct-2's key: never opens (as if erased; the same key would refuse the AD)
    assert await sealer.open("acct-2", "RequestObserved:organization_id", sealed) is None
    assert await sealer.open("acct-2", "x", other) == b"y"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealBroken):
        await sealer.open("acct-1", "RequestObserved:organization_id", tampered)


async def test_erase_destroys_the_key_for_good(sealer: FieldSealer) -> None:
    sealed = await sealer.seal("acct-1", "f", b"v")
    kept = await sealer.seal("acct-2", "f", b"w")
    assert await sealer.erase("acct-1") == 1
    assert await sealer.erase("acct-1") == 0
    assert await sealer.open("acct-1", "f", sealed) is None
    fresh = await sealer.seal("acct-1", "f", b"later")  # a new key for what comes after
    assert await sealer.open("acct-1", "f", fresh) == b"later"
    assert await sealer.open("acct-1", "f", sealed) is None
    assert await sealer.open("acct-2", "f", kept) == b"w"


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(account=st.text(min_size=1, max_size=40), label=st.text(max_size=40),
       plaintext=st.binary(max_size=300), other=st.text(min_size=1, max_size=40))
def test_seal_open_round_trip_and_binding(account: str, label: str, plaintext: bytes,
                                          other: str) -> None:
    account = account.encode("utf-8", "replace").decode("utf-8")
    label = label.encode("utf-8", "replace").decode("utf-8")
    other = other.encode("utf-8", "replace").decode("utf-8")
    sealing = Sealing("eu", bytes(range(32)))
    key, wrapped = sealing.new_key(account)
    sealed = sealing.seal(account, key, label, plaintext)
    assert sealing.open(account, key, label, sealed) == plaintext
    assert sealing.open(account, sealing.unwrap(account, key.generation, wrapped), label,
                        sealed) == plaintext
    if other != account:
        with pytest.raises(SealBroken):
            sealing.open(other, key, label, sealed)
        with pytest.raises(SealBroken):
            sealing.unwrap(other, key.generation, wrapped)
    with pytest.raises(SealBroken):
        sealing.open(account, key, label + "x", sealed)


def test_a_score_sealed_before_it_carried_a_link_key_still_opens() -> None:
    """Schema 2 scores had no ``prompt_link`` (sealed: ``content_sha256`` alone); they open and
    erase as before, and a schema 3 score's link key is sealed and erased like a request's."""
    sealing, account = Sealing("eu", bytes(range(32))), "acct-1"
    key, _ = sealing.new_key(account)
    score = ScoreRecorded("r1", "prompt", "cd" * 32, 30, "clf", "1", (("cyber", 0.95),))
    v2 = codec.encode_body(score)
    del v2["prompt_link"]  # as a schema 2 writer stored it
    stored = msgpack.packb(seal_map(sealing, account, key, "ScoreRecorded", v2))
    assert open_body(sealing, "ScoreRecorded", 2, stored, account, "e1", key) == score
    erased = open_body(sealing, "ScoreRecorded", 2, stored, account, "e1", None)
    assert erased == replace(score, content_sha256=ERASED + "e1")
    linked = replace(score, prompt_link="ab" * 16)
    stored = msgpack.packb(seal_map(sealing, account, key, "ScoreRecorded",
                                    codec.encode_body(linked)))
    assert b"ab" * 16 not in stored
    assert open_body(sealing, "ScoreRecorded", 3, stored, account, "e2", key) == linked
    erased = open_body(sealing, "ScoreRecorded", 3, stored, account, "e2", None)
    assert erased == replace(score, content_sha256=ERASED + "e2", prompt_link=None)


# --- erasure in the event stores ---------------------------------------------------------------

ORG, PROJECT, KEY_FP, LINK = "org-7f3a91", "proj-c0ffee", "fp-9d8e7f6a5b4c", "lk-4b1d2c3e4f"
PROMPT_SHA, CONTENT_SHA = "ab" * 32, "cd" * 32
OPERATOR_NOTE, APPEAL_TEXT, FILED_BY = "case 4411 per ticket", "I was testing my own app", "jo"
PERSONAL = (ORG, PROJECT, KEY_FP, LINK, PROMPT_SHA, CONTENT_SHA, OPERATOR_NOTE, APPEAL_TEXT)


def personal_history(account: str, region: str) -> list[Event]:
    bodies: list[EventBody] = [
        RequestObserved("r1", "m", "proxy", 10, 20, 30, PROMPT_SHA, False, "allow", ORG, PROJECT,
                        KEY_FP, LINK),
        ScoreRecorded("r1", "prompt", CONTENT_SHA, 30, "clf", "1", (("cyber", 0.95),)),
        StrikeRecorded("cyber", 0.95, 1.0, 1.0, 3600.0, "cyber.strike", "r1", "clf", "1", 2),
        EnforcementChanged(1, 0, None, "risk over threshold", "escalate.points", 1.0, 3),
        AccountLinked("organization", "org:" + ORG, "link.organization", "r1", 1),
        OperatorActionTaken("alice", "set_level", 2, None, OPERATOR_NOTE),
        EnforcementChanged(2, 1, None, f"operator alice: {OPERATOR_NOTE}", "operator.set_level",
                           1.0, 6),
        AppealFiled("A-1", FILED_BY, APPEAL_TEXT),
    ]
    return [make_event(account, region, v, body=b) for v, b in enumerate(bodies, start=1)]


async def _fill(store: StoreUnderTest, account: str) -> list[Event]:
    events = personal_history(account, store.region)
    command = EnforcementCommand("c1", account, store.region, 2, 10, 1000, (), None, 7, "p",
                                 f"operator alice: {OPERATOR_NOTE}", T0)
    outbox = (OutboxMessage("c1", enforce_subject(store.region, account),
                            encode_command(command)),)
    await store.append(AppendRequest(account, 0, tuple(events[:4])))
    await store.append(AppendRequest(account, 4, tuple(events[4:]), "sig-x", outbox))
    # a neighbour with its own personal values, which must survive
    await store.append(AppendRequest("acct-keep", 0, tuple(
        personal_history("acct-keep", store.region)[:2])))
    return events


async def test_erase_keeps_the_history_working_and_shows_who(store: StoreUnderTest) -> None:
    events = await _fill(store, "acct-e")
    before = await store.history("acct-e")
    assert before[0].body == events[0].body  # sealed on the way in, opened on the way out
    await store.save_snapshot(await store.load("acct-e"))
    when = T0 + timedelta(days=3)

    # a published message that forwarded its link to its organisation's history
    forward = Signal("fwd-1", "org:" + ORG, store.region, T0, "k",
                     MemberLinked("acct-e", "organization", "r1"))
    await store.append(AppendRequest("acct-f", 0, (make_event("acct-f", store.region, 1),),
                                     outbox=(OutboxMessage("fwd-1", f"sg.{store.region}.acct.1.o",
                                                           encode_signal(forward)),)))
    await store.mark_published_messages(["fwd-1"])

    done = await store.erase("acct-e", "alice", when)
    assert (done.erased_through, done.tombstone_version, done.keys_destroyed) == (8, 9, 1)
    assert done.snapshots_dropped >= 1 and done.outbox_rewritten == 2
    assert [m.message_id for m in await store.latest_published(100)] == []

    after = await store.history("acct-e")
    assert [e.version for e in after] == list(range(1, 10))
    tomb = after[-1]
    assert tomb.body == AccountErased("alice", 8, 1) and tomb.occurred_at == when
    request = after[0].body
    assert isinstance(request, RequestObserved)
    assert request.organization_id is None and request.prompt_link is None
    assert request.prompt_sha256.startswith(ERASED)
    assert erased_names(after[1].body) == ("content_sha256",)
    assert after[2].body == events[2].body  # strikes hold nothing personal
    assert after[3].body == events[3].body  # an automatic reason is not sealed
    change = after[6].body
    assert isinstance(change, EnforcementChanged) and change.reason == ERASED
    assert erased_names(after[7].body) == ("filed_by", "reason")
    for blob in (repr(e.body) for e in after):
        assert not any(value in blob for value in PERSONAL)

    state = await store.load("acct-e")
    assert state.version == 9 and state.level == 2 and state.strikes == 1
    assert fold(initial_state("acct-e", store.region), after) == state
    assert (await store.state_at("acct-e", version=7)).level == 2
    text = render(explain(after, 7))
    assert "erased" in text and "by alice" in text and OPERATOR_NOTE not in text
    assert verify(load_chain_key(store.region), "acct-e",
                  await store.chain("acct-e")).first_break is None
    [pending] = await store.pending_outbox(10)
    assert decode_command(pending.message.payload).reason == ERASED
    feed = [f.event for f in await store.read_feed(0, 100) if f.event.account_id == "acct-e"]
    assert feed == after

    kept = await store.history("acct-keep")
    assert kept[0].body == personal_history("acct-keep", store.region)[0].body
    # later events of the account are sealed under a new key and read back whole
    later = make_event("acct-e", store.region, 10, body=events[0].body)
    await store.append(AppendRequest("acct-e", 9, (later,)))
    assert (await store.history("acct-e", from_version=10))[0].body == events[0].body
    assert (await store.history("acct-e", to_version=1))[0].body == after[0].body

    with pytest.raises(InvalidInput):
        await store.erase("acct-none", "alice", when)


async def _plaintext_hits(url: str, values: tuple[str, ...]) -> dict[str, int]:
    """Each value searched for, as bytes, in every column of every table that holds data."""
    conn = await asyncpg.connect(url)
    try:
        hits: dict[str, int] = {}
        for value in values:
            needle = value.encode()
            found = 0
            for table, columns in (
                ("events", ("body",)), ("outbox", ("payload",)), ("snapshots", ("state",)),
                ("account_keys", ("wrapped",)),
            ):
                for column in columns:
                    found += await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE position($1::bytea in {column}) > 0",
                        needle)
            for table, column in (("inbox", "inbox_key"), ("outbox", "subject"),
                                  ("events", "causation_id"), ("events", "correlation_id")):
                found += await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE position($1 in {column}) > 0", value)
            hits[value] = found
        return hits
    finally:
        await conn.close()


async def test_no_plaintext_is_left_in_postgres(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    store = PostgresEventStore("eu", fresh_database_url, snapshot_every=3)
    try:
        await _fill(store, "acct-e")
        # before: the values are sealed in events, but snapshots hold them in the clear
        assert sum((await _plaintext_hits(fresh_database_url, (ORG,))).values()) >= 1
        await store.erase("acct-e", "alice", T0 + timedelta(days=1))
        hits = await _plaintext_hits(fresh_database_url, PERSONAL)
        assert hits == dict.fromkeys(PERSONAL, 0)
        # what the key destroyed cannot be read back even by a store with every key
        fresh = PostgresEventStore("eu", fresh_database_url)
        try:
            assert "ab" * 32 not in repr(await fresh.history("acct-e"))
        finally:
            await fresh.close()
    finally:
        await store.close()


async def test_a_plain_store_writes_in_the_clear_for_benchmarks(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    store = PostgresEventStore("eu", fresh_database_url, seal_personal=False)
    try:
        await store.append(AppendRequest("acct-p", 0, tuple(personal_history("acct-p", "eu"))))
        assert (await _plaintext_hits(fresh_database_url, (ORG,)))[ORG] >= 1
        assert (await store.history("acct-p"))[0].body.organization_id == ORG  # type: ignore[union-attr]
    finally:
        await store.close()
