"""The msgpack codec: exact round trips, strict rejection of everything else."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.core import codec
from safeguards.core.content import ClassifyRequest, ContentItem
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.errors import (
    CodecError,
    MalformedEnvelope,
    PayloadTooLarge,
    UnknownType,
    UnsupportedSchemaVersion,
)
from safeguards.core.events import (
    EVENT_TYPES,
    Event,
    RequestObserved,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    Signal,
)
from safeguards.core.state import AccountState, PendingApproval

from strategies import (
    account_ids,
    bodies,
    commands,
    events,
    keyed_hashes,
    score_recorded,
    signals,
    texts,
    times,
)


@given(events)
def test_event_round_trip(event: Event) -> None:
    assert codec.decode_event(codec.encode_event(event)) == event


@given(signals)
def test_signal_round_trip(signal: Signal) -> None:
    assert codec.decode_signal(codec.encode_signal(signal)) == signal


@given(signals, st.sampled_from(["\ud800", "a\udfff", "\udc80b"]))
def test_a_lone_surrogate_is_a_typed_error_not_a_unicode_error(signal: Signal,
                                                               bad: str) -> None:
    with pytest.raises(MalformedEnvelope, match="lone surrogate"):
        codec.encode_signal(dataclasses.replace(signal, correlation_id=bad))


@given(commands)
def test_command_round_trip(command: EnforcementCommand) -> None:
    assert codec.decode_command(codec.encode_command(command)) == command


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_garbage_bytes_raise_only_codec_errors(data: bytes) -> None:
    for decode in (codec.decode_event, codec.decode_signal, codec.decode_command):
        with contextlib.suppress(CodecError):
            decode(data)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(json_like)
def test_well_formed_msgpack_of_the_wrong_shape_raises_codec_errors(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    for decode in (codec.decode_event, codec.decode_signal, codec.decode_command):
        with pytest.raises(CodecError):
            decode(data)


@given(events, st.sampled_from(["t", "sv", "id", "a", "r", "n", "ts", "c", "k", "p", "b"]),
       json_like)
def test_a_mutated_envelope_field_decodes_or_fails_typed(event: Event, key: str,
                                                          value: object) -> None:
    wire = codec.event_to_wire(event)
    wire[key] = value
    with contextlib.suppress(CodecError):
        codec.decode_event(msgpack.packb(wire, use_bin_type=True))


def _wire(event: Event) -> dict[str, object]:
    return codec.event_to_wire(event)


@given(events)
def test_unknown_type_and_versions_are_typed(event: Event) -> None:
    wire = _wire(event)
    wire["t"] = "NoSuchEvent"
    with pytest.raises(UnknownType):
        codec.decode_event(msgpack.packb(wire))
    wire = _wire(event)
    wire["sv"] = event.schema_version + 1
    with pytest.raises(UnsupportedSchemaVersion):
        codec.decode_event(msgpack.packb(wire))
    wire["sv"] = 0
    with pytest.raises(UnsupportedSchemaVersion):
        codec.decode_event(msgpack.packb(wire))


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        codec.decode_event(b"\x00" * 70_000)
    with pytest.raises(PayloadTooLarge):
        codec.decode_signal(b"\x00" * 100, max_bytes=10)


def test_account_ids_that_would_break_a_subject_are_refused() -> None:
    wire = {"t": "Signal", "sv": 1, "id": "s1", "a": "bad account", "r": "eu", "ts": 0, "k": "",
            "o": None}
    with pytest.raises(MalformedEnvelope, match="printable ASCII"):
        codec.decode_signal(msgpack.packb(wire))


def test_a_signal_cannot_smuggle_a_decision() -> None:
    body = {"level": 5, "previous_level": 0, "expires_at": None, "reason": "", "rule_id": "x",
            "risk_total": 0.0, "caused_by_version": 1}
    wire = {"t": "Signal", "sv": 1, "id": "s1", "a": "acct", "r": "eu", "ts": 0, "k": "",
            "o": {"t": "EnforcementChanged", "sv": 1, "b": body}}
    with pytest.raises(UnknownType, match="decision"):
        codec.decode_signal(msgpack.packb(wire))


def test_review_requests_are_decisions_and_claims_observations() -> None:
    request = ReviewRequested(4, "points past the automatic limit", "escalate.review", 7)
    wire = {"t": "Signal", "sv": 1, "id": "s1", "a": "acct", "r": "eu", "ts": 0, "k": "",
            "o": {"t": request.TYPE, "sv": 1, "b": codec.encode_body(request)}}
    with pytest.raises(UnknownType, match="decision"):
        codec.decode_signal(msgpack.packb(wire))
    claim = ReviewClaimed("alice", "taking it")
    signal = Signal("s1", "acct", "eu", codec.from_micros(0), "k", claim)
    assert codec.decode_signal(codec.encode_signal(signal)) == signal


def test_strategies_cover_every_event_type() -> None:
    seen: set[str] = set()

    @settings(max_examples=2000, database=None)  # 18 types now: 400 left one out in a run
    @given(bodies)
    def collect(body: object) -> None:
        seen.add(type(body).__name__)

    collect()
    assert seen == set(EVENT_TYPES)


def test_a_snapshot_keeps_the_review_the_evidence_and_a_pending_approval() -> None:
    state = AccountState("acct", "eu", version=9, level=3,
                         strongest=(("weapons", 0.97, "r1"), ("weapons", 0.95, "r2")),
                         review_level=4,
                         pending_approval=PendingApproval(8, "alice", "set_level", 5, None,
                                                          "confirmed abuse",
                                                          datetime(2026, 12, 5, tzinfo=UTC)))
    assert codec.decode_state(codec.encode_state(state)) == state


def test_v1_request_observed_is_upcast() -> None:
    v1 = {"request_id": "r", "model": "m", "input_tokens": 1, "output_tokens": 2,
          "prompt_chars": 3, "prompt_sha256": "0" * 64, "streamed": False, "action": "allow"}
    body = codec.decode_body("RequestObserved", 1, v1)
    assert isinstance(body, RequestObserved) and body.surface == "proxy"


@given(score_recorded, times)
def test_a_v2_score_without_a_link_key_still_decodes(score: ScoreRecorded, at: datetime) -> None:
    """Scores stored or sent before they carried the prompt's link key (schema 2) read as
    carrying none, as events and as signals."""
    old = codec.encode_body(score)
    del old["prompt_link"]
    assert codec.decode_body("ScoreRecorded", 2, old) == dataclasses.replace(score,
                                                                               prompt_link=None)
    wire = {"t": "Signal", "sv": 1, "id": "s1", "a": "acct", "r": "eu",
            "ts": codec.to_micros(at), "k": "", "o": {"t": "ScoreRecorded", "sv": 2, "b": old}}
    decoded = codec.decode_signal(msgpack.packb(wire, use_bin_type=True))
    assert decoded.observation == dataclasses.replace(score, prompt_link=None)
    carried = dataclasses.replace(decoded, observation=score)
    assert codec.decode_signal(codec.encode_signal(carried)) == carried


content_items = st.builds(ContentItem, request_id=texts, account_id=account_ids,
                          region=st.sampled_from(("us", "eu")),
                          kind=st.sampled_from(("prompt", "completion")), text=texts,
                          occurred_at=times, correlation_id=texts,
                          organization_id=st.none() | account_ids,
                          api_key_fingerprint=st.none() | keyed_hashes,
                          served_unscored=st.booleans(), prompt_link=st.none() | keyed_hashes)


@given(content_items)
def test_a_content_item_round_trips_with_or_without_its_link_key(item: ContentItem) -> None:
    assert codec.decode_record(codec.encode_record(item), ContentItem) == item
    # a gate that predates the key wrote no such field: it reads as none
    wire = msgpack.unpackb(codec.encode_record(item), raw=False)
    del wire["b"]["prompt_link"]
    older = codec.decode_record(msgpack.packb(wire, use_bin_type=True), ContentItem)
    assert older == dataclasses.replace(item, prompt_link=None)


classify_requests = st.builds(ClassifyRequest, request_id=texts,
                              region=st.sampled_from(("us", "eu")),
                              kind=st.sampled_from(("prompt", "completion")), text=texts,
                              deadline_ms=st.floats(0, 10_000), first=st.booleans())


@given(classify_requests)
def test_a_classify_request_round_trips_and_an_older_gates_is_not_first(
        req: ClassifyRequest) -> None:
    assert codec.decode_record(codec.encode_record(req), ClassifyRequest) == req
    # a gate that predates probation's priority wrote no such field: an ordinary screening
    wire = msgpack.unpackb(codec.encode_record(req), raw=False)
    del wire["b"]["first"]
    older = codec.decode_record(msgpack.packb(wire, use_bin_type=True), ClassifyRequest)
    assert older == dataclasses.replace(req, first=False)


def test_errors_never_echo_field_values() -> None:
    canary = "CANARY-prompt-text-7f3a"
    wire = {"t": "Signal", "sv": 1, "id": "s1", "a": "acct", "r": "eu", "ts": 0, "k": "",
            "o": {"t": "RequestObserved", "sv": 2, "b": {"request_id": 5, "model": canary}}}
    with pytest.raises(CodecError) as info:
        codec.decode_signal(msgpack.packb(wire))
    assert canary not in str(info.value)
    wire["o"]["b"] = {canary: 1}  # type: ignore[index]
    with pytest.raises(CodecError) as info:
        codec.decode_signal(msgpack.packb(wire))
    assert canary[:20] not in str(info.value)
