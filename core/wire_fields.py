"""Type-driven msgpack codecs for the frozen dataclasses of the wire: strict and fast.

``DataclassCodec`` encodes a dataclass as a map and decodes it back, checking every field's type.
Its decoder is generated once per class (a specialised function with the checks of plain
``str``/``int``/``bool``/``float`` fields written inline), because it runs for every event of
every history read, fold and backtest; other field types call their own decoder. Error messages
name the class and field (``ScoreRecorded.scores``) and types, never the values.

Times travel as integer microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from safeguards.core.errors import MalformedEnvelope

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- time ---------------------------------------------------------------------------------------


def to_micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise MalformedEnvelope("naive datetime: times must carry a timezone")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


# --- type-driven field codecs -------------------------------------------------------------------

_Decoder = Callable[[Any, str], Any]
_Encoder = Callable[[Any], Any]


def type_name(value: Any) -> str:
    return type(value).__name__


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,31}")


def type_label(name: str) -> str:
    return repr(name) if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name) else "<not a type name>"


def unexpected_names(keys: list[Any]) -> str:
    """Unexpected keys for an error message: plain field-like names are shown, anything else
    (which could be content someone put in a key) only counted."""
    shown = [k for k in keys[:5] if isinstance(k, str) and _PLAIN_NAME.fullmatch(k)]
    hidden = len(keys) - len(shown)
    parts = [repr(k) for k in shown] + ([f"{hidden} other key(s)"] if hidden else [])
    return ", ".join(parts)


def _field_codec(tp: Any) -> tuple[_Encoder, _Decoder]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        nested = DataclassCodec(tp)  # type: ignore[arg-type]
        return nested.encode, nested.decode
    if tp is str:
        def dec_str(v: Any, path: str) -> Any:
            if type(v) is not str:
                raise MalformedEnvelope(f"{path}: expected str, got {type_name(v)}")
            return v
        return (lambda v: v), dec_str
    if tp is bool:
        def dec_bool(v: Any, path: str) -> Any:
            if not isinstance(v, bool):
                raise MalformedEnvelope(f"{path}: expected bool, got {type_name(v)}")
            return v
        return (lambda v: v), dec_bool
    if tp is int:
        def dec_int(v: Any, path: str) -> Any:
            if not isinstance(v, int) or isinstance(v, bool):
                raise MalformedEnvelope(f"{path}: expected int, got {type_name(v)}")
            return v
        return (lambda v: v), dec_int
    if tp is float:
        def dec_float(v: Any, path: str) -> Any:
            if type(v) is float:
                return v
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise MalformedEnvelope(f"{path}: expected float, got {type_name(v)}")
            return float(v)
        return (lambda v: v), dec_float
    if tp is datetime:
        def dec_dt(v: Any, path: str) -> Any:
            if not isinstance(v, int) or isinstance(v, bool):
                raise MalformedEnvelope(f"{path}: expected a time in microseconds")
            try:
                return from_micros(v)
            except OverflowError:
                raise MalformedEnvelope(f"{path}: time out of range") from None
        return to_micros, dec_dt
    if origin is typing.Literal:
        allowed = frozenset(args)
        def dec_lit(v: Any, path: str) -> Any:
            if not isinstance(v, str) or v not in allowed:
                raise MalformedEnvelope(f"{path}: expected one of {sorted(allowed)}")
            return v
        return (lambda v: v), dec_lit
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"unsupported union {tp}")
        enc, dec = _field_codec(inner[0])
        return (lambda v: None if v is None else enc(v)), (
            lambda v, path: None if v is None else dec(v, path)
        )
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis and args[0] == tuple[str, float]:
            return (lambda v: [[n, x] for n, x in v]), _dec_name_scores
        if len(args) == 2 and args[1] is Ellipsis:
            enc, dec = _field_codec(args[0])
            def dec_var(v: Any, path: str) -> Any:
                if not isinstance(v, list | tuple):
                    raise MalformedEnvelope(f"{path}: expected an array, got {type_name(v)}")
                # The element path is only spelled out when an element is bad: this is the
                # hot path of every history read.
                try:
                    return tuple([dec(x, path) for x in v])
                except MalformedEnvelope:
                    for i, x in enumerate(v):
                        dec(x, f"{path}[{i}]")
                    raise
            return (lambda v: [enc(x) for x in v]), dec_var
        codecs = [_field_codec(a) for a in args]
        if len(codecs) == 2:  # pairs, such as (category, score), get an unrolled decoder
            (_, first), (_, second) = codecs
            def dec_pair(v: Any, path: str) -> Any:
                if not isinstance(v, list | tuple) or len(v) != 2:
                    raise MalformedEnvelope(f"{path}: expected an array of 2")
                return (first(v[0], path), second(v[1], path))
            return (lambda v: [c[0](x) for c, x in zip(codecs, v)]), dec_pair  # noqa: B905
        def dec_fixed(v: Any, path: str) -> Any:
            if not isinstance(v, list | tuple) or len(v) != len(codecs):
                raise MalformedEnvelope(f"{path}: expected an array of {len(codecs)}")
            return tuple([c[1](x, path) for c, x in zip(codecs, v)])  # noqa: B905
        return (lambda v: [c[0](x) for c, x in zip(codecs, v)]), dec_fixed  # noqa: B905
    raise TypeError(f"no wire codec for {tp!r}")


def _dec_name_scores(v: Any, path: str) -> Any:
    """``(name, score), ...`` (a classifier's scores): the hottest field of every history read,
    so its loop is written out."""
    if not isinstance(v, list | tuple):
        raise MalformedEnvelope(f"{path}: expected an array, got {type_name(v)}")
    out = []
    for i, pair in enumerate(v):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise MalformedEnvelope(f"{path}[{i}]: expected an array of 2")
        name, score = pair
        if type(name) is not str:
            raise MalformedEnvelope(f"{path}[{i}]: expected str, got {type_name(name)}")
        if type(score) is not float:
            if not isinstance(score, int) or isinstance(score, bool):
                raise MalformedEnvelope(f"{path}[{i}]: expected float, got {type_name(score)}")
            score = float(score)
        out.append((name, score))
    return tuple(out)


_INLINE_CHECKS = {str: "str", int: "int", bool: "bool"}  # exact type: bool is not an int here


class DataclassCodec:
    """Encodes a frozen dataclass as a map and decodes it back, strictly.

    Error paths name the class and field (``ScoreRecorded.scores``); they are precomputed, since
    decoding runs for every event of every history read. The decoder is generated: one function
    per class that reads each field, checks a plain field's type inline and calls the field's
    decoder otherwise, then builds the object positionally.
    """

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields: list[tuple[str, _Encoder, _Decoder, bool, str]] = []
        for f in fields(cls):
            enc, dec = _field_codec(hints[f.name])
            has_default = f.default is not MISSING
            self.fields.append((f.name, enc, dec, has_default, f"{cls.__name__}.{f.name}"))
        self.names = frozenset(f[0] for f in self.fields)
        self.decode: _Decoder = self._generate(cls, hints)

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: enc(getattr(obj, name)) for name, enc, _, _, _ in self.fields}

    def _generate(self, cls: type, hints: dict[str, Any]) -> _Decoder:
        scope: dict[str, Any] = {"cls": cls, "names": self.names, "MISSING": MISSING,
                                 "MalformedEnvelope": MalformedEnvelope, "type_name": type_name,
                                 "unexpected_names": unexpected_names}
        lines = [
            "def decode(data, path):",
            "    if type(data) is not dict:",
            "        raise MalformedEnvelope(f'{path}: expected a map, got {type_name(data)}')",
            "    if not names.issuperset(data):",
            "        extra = [k for k in data if k not in names]",
            "        raise MalformedEnvelope(f'{path}: unexpected field(s) "
            "{unexpected_names(extra)}')",
            "    get = data.get",
        ]
        for i, (f, (name, _, dec, has_default, field_path)) in enumerate(
                zip(fields(cls), self.fields, strict=True)):
            v = f"v{i}"
            scope[f"dec{i}"], scope[f"default{i}"] = dec, f.default
            lines.append(f"    {v} = get({name!r}, MISSING)")
            missing = (f"{v} = default{i}" if has_default
                       else f"raise MalformedEnvelope({field_path + ': missing'!r})")
            inline = _INLINE_CHECKS.get(hints[name])
            if inline is not None:
                lines += [f"    if type({v}) is not {inline}:",
                          f"        if {v} is MISSING:",
                          f"            {missing}",
                          "        else:",
                          f"            raise MalformedEnvelope({field_path!r} + "
                          f"': expected {inline}, got ' + type_name({v}))"]
            else:
                lines += [f"    if {v} is MISSING:",
                          f"        {missing}",
                          "    else:",
                          f"        {v} = dec{i}({v}, {field_path!r})"]
        lines.append(f"    return cls({', '.join(f'v{i}' for i in range(len(self.fields)))})")
        exec("\n".join(lines), scope)
        decode: _Decoder = scope["decode"]
        return decode
