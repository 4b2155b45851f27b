"""Text normalisation that undoes cheap obfuscation before a model sees the text.

Applied identically when training and when scoring: the manifest names the normaliser
(``"normalizer": "sg-norm-1"``) and :func:`safeguards.adapters.classifier.text.prepare_text`
runs it before windowing; the training code runs the same function on every training text. The
original text is kept for the hash and the length. A model whose manifest names no normaliser
sees its text unchanged.

``sg-norm-1``, in order:

1. zero-width and invisible format characters (ZWSP, ZWJ, ZWNJ, word joiner, BOM, soft hyphen,
   bidi controls) are deleted;
2. NFKC (full-width letters, mathematical alphanumerics, ligatures become plain letters), then
   accents are stripped (NFKD, combining marks dropped);
3. a word made only of Latin letters and Cyrillic or Greek look-alikes (``bоmb`` with a
   Cyrillic ``о``) becomes Latin; a word with any other Cyrillic or Greek letter is left alone,
   so most Russian or Greek words keep their spelling;
4. the text is case-folded;
5. spaced-out letters -- at least three single letters or digits separated by spaces or by one
   of ``. - _ *`` -- are joined; inside such a run, two or more spaces mark a word boundary
   (``h o w  t o`` becomes ``how to``);
6. leetspeak inside words: a word that mixes letters with ``0 1 3 4 5 7 8 9 @ $ ! |`` has those
   mapped to ``o i e a s t b g a s i l`` (``m4ke a b0mb`` becomes ``make a bomb``); quantities
   and versions such as ``4th``, ``10mg``, ``python3``, ``covid19`` are left alone;
7. runs of whitespace become one space, and the ends are trimmed.

``sg-decode-1`` (the encoder models'): encoded payloads, base64 and hex, replaced by the text they
carry where they decode to readable text (``payloads.py``); nothing else changes, case included.
"""

from __future__ import annotations

import re
import unicodedata

from safeguards.adapters.classifier.payloads import decode_payloads

NORMALIZER_VERSIONS = ("sg-norm-1", "sg-decode-1")

_INVISIBLE = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x200B, 0x200C, 0x200D,
     0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2060, 0x2061, 0x2062, 0x2063,
     0x2064, 0x2066, 0x2067, 0x2068, 0x2069, 0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F,
     0x3164, 0xFE0F, 0xFEFF, 0xFFA0],
)
# Cyrillic and Greek letters that render like Latin ones (lower case; applied after casefold).
_CONFUSABLE = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ɡ": "g", "һ": "h", "ӏ": "l", "ı": "i",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "γ": "y", "ϲ": "c", "ѵ": "v",
})
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLE)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "9": "g", "@": "a", "$": "s", "!": "i", "|": "l"})

_LETTER_WORD = re.compile(r"[^\W\d_]+")
# a run of >= 3 single characters, each separated by spaces or one of . - _ *
_SPACED = re.compile(r"(?<![\w@$])(?:[a-z0-9](?: {1,4}|[.\-_*])){2,}[a-z0-9](?![\w@$])")
_SEPARATORS = re.compile(r"[.\-_*]")
# candidate leet words: letters, digits and leet symbols, with a letter and a non-letter
_WORDISH = re.compile(
    r"(?<![a-z0-9@$!|])(?=[a-z0-9@$!|]*[0-9@$!|])(?=[a-z0-9@$!|]*[a-z])[a-z0-9@$!|]+")
_QUANTITY = re.compile(
    r"\d+(?:st|nd|rd|th|s|k|m|g|d|h|p|x|mg|kg|gb|mb|tb|kb|km|cm|mm|ml|am|pm|hz|khz|mhz|ghz|px|"
    r"min|ft|lb|lbs|yo|bit|fps)|[a-z]+\d+|0x[0-9a-f]+|@.*")
_WHITESPACE = re.compile(r"\s+")
_OTHER_SPACE = re.compile(r"[^\S ]")


def normalize(text: str, version: str = "sg-norm-1") -> str:
    """The normalised form of ``text`` under ``version`` (see the module docstring)."""
    if version == "sg-decode-1":  # encoded payloads read as what they say (``payloads``)
        return decode_payloads(text)
    if version != "sg-norm-1":
        raise ValueError(f"unknown normaliser {version!r}")
    # Collapsing whitespace can form a new spaced-out run ("0     0_0" -> "0 0_0"): apply the
    # pass until nothing changes, so that the result is a fixed point (bounded: each pass that
    # changes something joins or drops characters).
    s = _one_pass(text)
    for _ in range(_MAX_PASSES):
        again = _one_pass(s)
        if again == s:
            break
        s = again
    return s


_MAX_PASSES = 8


def _one_pass(text: str) -> str:
    s = text.translate(_INVISIBLE)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
        s = s.casefold()
        if any(c in _CONFUSABLE_CHARS for c in s):
            s = _LETTER_WORD.sub(_unconfuse, s)
    else:
        s = s.lower()
    s = _OTHER_SPACE.sub(" ", s)  # one space per whitespace character, so runs keep their width
    s = _SPACED.sub(_join_spaced, s)
    s = _WORDISH.sub(_unleet, s)
    return _WHITESPACE.sub(" ", s).strip()


def _unconfuse(m: re.Match[str]) -> str:
    word = m.group(0)
    mapped = word.translate(_CONFUSABLE)
    return mapped if mapped.isascii() else word  # only words wholly Latin or look-alike


def _join_spaced(m: re.Match[str]) -> str:
    run = m.group(0)
    words = [_SEPARATORS.sub("", w).replace(" ", "")
             for w in (re.split(r" {2,}", run) if "  " in run else [run])]
    if all(len(w) == 1 for w in words):  # evenly spaced: no word boundaries to keep
        return "".join(words)
    return " ".join(words)


def _unleet(m: re.Match[str]) -> str:
    word = m.group(0)
    if word.isalpha():
        return word
    core = word.rstrip("!|")  # a trailing "!" is punctuation, not an "i"
    tail = word[len(core):]
    if not core or core.isalpha() or _QUANTITY.fullmatch(core):
        return word
    mapped = core.translate(_LEET)
    if not mapped.isalpha():  # other digits remain: a number, an identifier, not leetspeak
        return word
    return mapped + tail
