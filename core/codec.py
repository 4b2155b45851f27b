"""The msgpack wire format: one envelope for events, signals and enforcement commands.

Decoding is strict. The size limit is checked before parsing; the envelope and the body must hold
exactly the expected keys with the expected types; a known type at an older schema version is
upcast (``upcast_vN_vM``, in :mod:`safeguards.core.upcasters`) before it is decoded; anything else
raises a typed :class:`CodecError` whose message names fields and types but never echoes content.

Wire layout (all keys short strings)::

    event:   {"t", "sv", "id", "a", "r", "n", "ts", "c", "k", "p", "b"}
    signal:  {"t": "Signal", "sv", "id", "a", "r", "ts", "k", "o": {"t", "sv", "b"} | nil}
    command: {"t": "EnforcementCommand", "sv", "b"}

Times travel as integer microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgpack

from safeguards.core.content import ClassifyReply, ClassifyRequest, ContentItem
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.errors import (
    MalformedEnvelope,
    PayloadTooLarge,
    UnknownType,
    UnsupportedSchemaVersion,
)
from safeguards.core.events import EVENT_TYPES, Event, EventBody, Signal
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.state import FOLD_VERSION, AccountState
from safeguards.core.upcasters import upcast, upcast_state
from safeguards.core.wire_fields import (
    DataclassCodec,
    from_micros,
    to_micros,
    type_label,
    type_name,
    unexpected_names,
)

__all__ = ["from_micros", "to_micros"]  # the wire's time representation, re-exported

DEFAULT_MAX_BYTES = 64 * 1024
T = TypeVar("T")

SIGNAL_SCHEMA_VERSION = 1
COMMAND_SCHEMA_VERSION = 1


_BODY_CODECS = {name: DataclassCodec(cls) for name, cls in EVENT_TYPES.items()}
_COMMAND_CODEC = DataclassCodec(EnforcementCommand)


# --- records that carry text: content for scoring and synchronous classification -------------

def _pack(obj: object, *, use_bin_type: bool = True) -> bytes:
    """msgpack bytes; a text field that is not valid Unicode (a lone surrogate, which JSON
    escapes can produce) is the typed MalformedEnvelope, never a UnicodeEncodeError."""
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=use_bin_type)
    except UnicodeEncodeError:
        raise MalformedEnvelope("a text field is not valid Unicode (lone surrogate)") from None
    return packed


CONTENT_MAX_BYTES = 1024 * 1024
_RECORD_CODECS: dict[str, DataclassCodec] = {
    cls.__name__: DataclassCodec(cls) for cls in (ContentItem, ClassifyRequest, ClassifyReply)
}
R = TypeVar("R", ContentItem, ClassifyRequest, ClassifyReply)


def encode_record(record: ContentItem | ClassifyRequest | ClassifyReply) -> bytes:
    name = type(record).__name__
    packed: bytes = _pack(
        {"t": name, "sv": 1, "b": _RECORD_CODECS[name].encode(record)}, use_bin_type=True
    )
    return packed


def decode_record(data: bytes, cls: type[R], *, max_bytes: int = CONTENT_MAX_BYTES) -> R:
    env = _envelope(data, max_bytes, _COMMAND_KEYS, cls.__name__, 1)
    record: R = _RECORD_CODECS[cls.__name__].decode(_get(env, "b", dict), cls.__name__)
    return record


def _envelope(data: bytes, max_bytes: int, keys: frozenset[str], kind: str,
              version: int) -> dict[str, Any]:
    """A wire envelope's fields once its type is ``kind`` and its schema ``version``."""
    env = _check_keys(_unpack(data, max_bytes), keys)
    got = _get(env, "t", str)
    if got != kind:
        raise UnknownType(f"expected {kind}, got type {type_label(got)}")
    sv = _get(env, "sv", int)
    if sv != version:
        raise UnsupportedSchemaVersion(f"{kind} schema version {sv}; this build reads {version}")
    return env


# --- snapshots: an account's state, tagged with the fold version that produced it -------------

_STATE_CODEC = DataclassCodec(AccountState)


def encode_state(state: AccountState) -> bytes:
    packed: bytes = _pack(
        {"fold": FOLD_VERSION, "s": _STATE_CODEC.encode(state)}, use_bin_type=True
    )
    return packed


def decode_state(data: bytes) -> AccountState | None:
    """The snapshot's state, or None when a different fold produced it (so it must be rebuilt)."""
    env = _unpack(data, len(data) + 1)
    if not isinstance(env, dict) or env.get("fold") != FOLD_VERSION:
        return None
    state: AccountState = _STATE_CODEC.decode(env.get("s"), "AccountState")
    return state


def carry_state(data: bytes) -> AccountState | None:
    """A snapshot made by this fold or by an earlier one that ``core.upcasters.STATE_UPCASTERS``
    carry to it (an anchor's, whose events are gone); None where none does (rebuild it from
    events). Plain loads use :func:`decode_state`, which trusts this fold's snapshots only."""
    env = _unpack(data, len(data) + 1)
    fold = env.get("fold") if isinstance(env, dict) else None
    if not isinstance(fold, int) or isinstance(fold, bool) or not isinstance(env.get("s"), dict):
        return None
    carried = upcast_state(fold, env["s"], FOLD_VERSION)
    if carried is None:
        return None
    state: AccountState = _STATE_CODEC.decode(carried, "AccountState")
    return state


# --- bodies (also used by the event store, which keeps the envelope in columns) ----------------


def encode_body(body: EventBody) -> dict[str, Any]:
    return _BODY_CODECS[body.TYPE].encode(body)


def decode_body(type_name: str, schema_version: int, body: Any) -> EventBody:
    if not isinstance(body, dict):
        raise MalformedEnvelope(f"body of {type_label(type_name)}: expected a map")
    body = upcast(type_name, schema_version, body)
    decoded: EventBody = _BODY_CODECS[type_name].decode(body, type_name)
    return decoded


def pack_body(body: EventBody) -> bytes:
    packed: bytes = _pack(encode_body(body), use_bin_type=True)
    return packed


def unpack_body(type_name: str, schema_version: int, data: bytes) -> EventBody:
    return decode_body(type_name, schema_version, _unpack(data, len(data) + 1))


# --- envelopes ----------------------------------------------------------------------------------


def _unpack(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEnvelope(f"expected bytes, got {type_name(data)}")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"message is {len(data)} bytes; the limit is {max_bytes}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True,
            max_str_len=max_bytes, max_bin_len=max_bytes, max_array_len=4096, max_map_len=256,
        )
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError,
            TypeError, UnicodeDecodeError) as exc:
        raise MalformedEnvelope(f"not a valid msgpack message ({type(exc).__name__})") from None


def _get(env: dict[str, Any], key: str, kind: type | tuple[type, ...], *,
         nullable: bool = False) -> Any:
    if key not in env:
        raise MalformedEnvelope(f"envelope field {key!r} missing")
    value = env[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise MalformedEnvelope(f"envelope field {key!r}: wrong type {type_name(value)}")
    return value


def _check_keys(env: Any, expected: frozenset[str]) -> dict[str, Any]:
    if not isinstance(env, dict):
        raise MalformedEnvelope(f"envelope must be a map, got {type_name(env)}")
    extra = [k for k in env if k not in expected]
    if extra:
        raise MalformedEnvelope(f"unexpected envelope field(s) {unexpected_names(extra)}")
    return env


_EVENT_KEYS = frozenset({"t", "sv", "id", "a", "r", "n", "ts", "c", "k", "p", "b"})
_SIGNAL_KEYS = frozenset({"t", "sv", "id", "a", "r", "ts", "k", "o"})
_OBS_KEYS = frozenset({"t", "sv", "b"})
_COMMAND_KEYS = frozenset({"t", "sv", "b"})


def _ids(env: dict[str, Any]) -> tuple[str, str]:
    try:
        account = validate_account_id(_get(env, "a", str))
        region = validate_region(_get(env, "r", str))
    except MalformedEnvelope:
        raise
    except Exception as exc:  # InvalidAccountId / InvalidRegion: still a bad envelope
        raise MalformedEnvelope(str(exc)) from None
    return account, region


def _time(env: dict[str, Any], key: str) -> datetime:
    try:
        return from_micros(_get(env, key, int))
    except OverflowError:
        raise MalformedEnvelope(f"envelope field {key!r}: time out of range") from None


def event_to_wire(event: Event) -> dict[str, Any]:
    return {
        "t": event.type, "sv": event.schema_version, "id": event.event_id,
        "a": event.account_id, "r": event.region, "n": event.version,
        "ts": to_micros(event.occurred_at), "c": event.causation_id,
        "k": event.correlation_id, "p": event.policy_version, "b": encode_body(event.body),
    }


def encode_event(event: Event) -> bytes:
    packed: bytes = _pack(event_to_wire(event), use_bin_type=True)
    return packed


def event_from_wire(env: Any) -> Event:
    env = _check_keys(env, _EVENT_KEYS)
    type_name = _get(env, "t", str)
    schema_version = _get(env, "sv", int)
    account, region = _ids(env)
    version = _get(env, "n", int)
    if version < 1:
        raise MalformedEnvelope("envelope field 'n': versions start at 1")
    return Event(
        event_id=_get(env, "id", str),
        account_id=account,
        region=region,
        version=version,
        occurred_at=_time(env, "ts"),
        causation_id=_get(env, "c", str),
        correlation_id=_get(env, "k", str),
        policy_version=_get(env, "p", str, nullable=True),
        body=decode_body(type_name, schema_version, _get(env, "b", dict)),
    )


def decode_event(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    return event_from_wire(_unpack(data, max_bytes))


def encode_signal(signal: Signal) -> bytes:
    obs = signal.observation
    env = {
        "t": "Signal", "sv": SIGNAL_SCHEMA_VERSION, "id": signal.signal_id,
        "a": signal.account_id, "r": signal.region, "ts": to_micros(signal.occurred_at),
        "k": signal.correlation_id,
        "o": None if obs is None else {"t": obs.TYPE, "sv": obs.SCHEMA_VERSION,
                                       "b": encode_body(obs)},
    }
    packed: bytes = _pack(env, use_bin_type=True)
    return packed


def decode_signal(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Signal:
    env = _envelope(data, max_bytes, _SIGNAL_KEYS, "Signal", SIGNAL_SCHEMA_VERSION)
    account, region = _ids(env)
    raw_obs = _get(env, "o", dict, nullable=True)
    observation = None
    if raw_obs is not None:
        raw_obs = _check_keys(raw_obs, _OBS_KEYS)
        body = decode_body(_get(raw_obs, "t", str), _get(raw_obs, "sv", int),
                           _get(raw_obs, "b", dict))
        if not getattr(body, "OBSERVATION", False):
            raise UnknownType(f"{body.TYPE} is a decision, not an observation a signal may carry")
        observation = body
    return Signal(
        signal_id=_envelope_id(env, "id"),
        account_id=account,
        region=region,
        occurred_at=_time(env, "ts"),
        correlation_id=_envelope_id(env, "k", min_len=0),
        observation=observation,  # type: ignore[arg-type]
    )


MAX_ENVELOPE_ID = 200  # within the store's limit on ids (256), whatever is derived from them


def _envelope_id(env: dict[str, Any], key: str, *, min_len: int = 1) -> str:
    """An id a signal carries into the store (its id becomes the inbox key and causation id,
    its correlation id the events'): checked here against what the store accepts, so a signal
    the store would refuse is poison at decode, dead-lettered alone, never a failed commit."""
    value: str = _get(env, key, str)
    if not min_len <= len(value) <= MAX_ENVELOPE_ID or "\x00" in value:
        raise MalformedEnvelope(f"envelope field {key!r}: must be {min_len} to "
                                f"{MAX_ENVELOPE_ID} characters without NUL")
    return value


def encode_command(command: EnforcementCommand) -> bytes:
    env = {"t": "EnforcementCommand", "sv": COMMAND_SCHEMA_VERSION,
           "b": _COMMAND_CODEC.encode(command)}
    packed: bytes = _pack(env, use_bin_type=True)
    return packed


def decode_command(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> EnforcementCommand:
    env = _envelope(data, max_bytes, _COMMAND_KEYS, "EnforcementCommand",
                    COMMAND_SCHEMA_VERSION)
    command: EnforcementCommand = _COMMAND_CODEC.decode(_get(env, "b", dict), "EnforcementCommand")
    try:
        validate_account_id(command.account_id)
        validate_region(command.region)
    except Exception as exc:
        raise MalformedEnvelope(str(exc)) from None
    return command
