"""Encoded payloads read as what they say (normaliser ``sg-decode-1``).

People paste base64, base64url and hex all the time: a JWT to inspect, a webhook body, a log
line, a string to decode. The training corpora's encoded text is nearly all attack (injection
payloads, encoding jailbreaks), so a model reading the raw characters learns that an encoded run
is itself evidence, and refuses developers (2026.12.11 struck 90-100 % of written "decode this
base64 / JWT" asks and refused 45-95 %). What matters is what the payload says: decoded, a
harmful ask is read by the harm heads and an injection by the jailbreak head, whatever encoding
carried it, and a benign payload is benign.

:func:`decode_payloads` replaces, in place, each run that decodes to readable text with that
text, and leaves everything else alone:

- base64 (standard or URL-safe alphabet, padding optional) runs of at least ``MIN_RUN``
  characters, and hex runs (an optional ``0x``) of at least ``MIN_RUN`` digits;
- "readable": valid UTF-8, at least ``MIN_LETTERS`` letters, and at least ``MIN_PRINTABLE`` of it
  printable (or whitespace). A digest, a key, a signature or random bytes decode to noise and
  stay as they are, as does an ordinary long word (its bytes are noise too);
- decoded text is decoded again (base64 of base64), ``MAX_PASSES`` times at most;
- at most ``MAX_RUNS`` runs per pass, runs longer than ``MAX_RUN_CHARS`` are left alone: the
  cost is linear in the text and bounded.

Applied where the manifest names it, once, by the loader (``LoadedModel.raw``: the service,
calibration, evaluation and distillation all read the same); the hash and length always describe
the original text, and the decoded text is never stored or logged (it is content
like any prompt).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

MIN_RUN = 16  # characters of a run before it is a candidate (12 decoded bytes of base64)
MIN_LETTERS = 4
MIN_PRINTABLE = 0.9
MAX_PASSES = 2
MAX_RUNS = 64
MAX_RUN_CHARS = 64 * 1024

# Runs of the base64 alphabets not touching other word characters; '=' padding at the end only.
_BASE64 = re.compile(rf"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{{{MIN_RUN},}}={{0,2}}"
                     r"(?![A-Za-z0-9+/_=-])")
_HEX = re.compile(rf"(?<![A-Za-z0-9])(?:0x)?((?:[0-9A-Fa-f]{{2}}){{{MIN_RUN // 2},}})"
                  r"(?![A-Za-z0-9])")


def readable(raw: bytes) -> str | None:
    """``raw`` as text where it reads as text (see the module docstring), else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if sum(c.isalpha() for c in text) < MIN_LETTERS:
        return None
    printable = sum(c.isprintable() or c in "\t\n\r" for c in text)
    return text if printable >= MIN_PRINTABLE * len(text) else None


def _from_base64(run: str) -> str | None:
    body = run.rstrip("=")
    url_safe = "-" in body or "_" in body
    if len(body) % 4 == 1 or (url_safe and ("+" in body or "/" in body)):
        return None  # not a base64 length; or two alphabets mixed
    padded = body + "=" * (-len(body) % 4)
    try:
        if url_safe:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return readable(raw)


def _from_hex(run: str) -> str | None:
    return readable(bytes.fromhex(run))


# each pattern with its decoder, in the order they run: hex first, since a hex run is also a
# base64 run, and read as base64 it is noise
_DECODERS: tuple[tuple[re.Pattern[str], Callable[[str], str | None]], ...] = (
    (_HEX, _from_hex), (_BASE64, _from_base64))


def _decoded(m: re.Match[str], decode: Callable[[str], str | None]) -> str | None:
    """What a candidate run reads as (None: noise, or longer than MAX_RUN_CHARS)."""
    run = m.group(m.lastindex or 0)
    return None if len(run) > MAX_RUN_CHARS else decode(run)


def _decode_runs(text: str, pattern: re.Pattern[str],
                 decode: Callable[[str], str | None]) -> str:
    seen = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        decoded = _decoded(m, decode) if seen <= MAX_RUNS else None
        return m.group(0) if decoded is None else decoded

    return pattern.sub(replace, text)


def decode_payloads(text: str) -> str:
    """``text`` with every readable encoded run replaced by what it decodes to."""
    for _ in range(MAX_PASSES):
        if not _may_hold_runs(text):
            break
        decoded = text
        for pattern, decode in _DECODERS:
            decoded = _decode_runs(decoded, pattern, decode)
        if decoded == text:
            break
        text = decoded
    return text


def _may_hold_runs(text: str) -> bool:
    """False when no run can be there: a run is MIN_RUN characters without white space (a
    split is several times faster than the patterns' scan, and most text has no such word)."""
    return max(map(len, text.split()), default=0) >= MIN_RUN


def has_payload(text: str) -> bool:
    """Whether ``text`` carries a run that :func:`decode_payloads` would decode (the first
    readable one found answers)."""
    return _may_hold_runs(text) and any(
        _decoded(m, decode) is not None for pattern, decode in _DECODERS
        for m in pattern.finditer(text))
