"""Text helpers shared by the extractors: whitespace, capping, chunking, per-source de-duplication,
CSV / JSONL parsing and string literals of Python sources read with ``ast`` (never imported)."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any, Final

MAX_CHARS: Final = 8000  # hard cap for one text (long system prompts are cut at a paragraph)

_HSPACE = re.compile(r"[ \t\r\f\v]+")
_NONWORD = re.compile(r"\W+")


def ws(text: str) -> str:
    """Runs of horizontal whitespace collapsed (newlines kept)."""
    return _HSPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    return _NONWORD.sub(" ", text.lower()).strip()


class Seen:
    """Per-source de-duplication on lower-cased word tokens, as each collection did it."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def new(self, text: str) -> bool:
        k = dedup_key(text)
        if not k or k in self._keys:
            return False
        self._keys.add(k)
        return True


def cap(text: str, limit: int = MAX_CHARS) -> str:
    """At most ``limit`` characters, cut at a paragraph (else line) break in the second half."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = text.rfind("\n", 0, limit)
    if cut < limit // 2:
        cut = limit
    return text[:cut].rstrip()


def clip(text: str, limit: int = 4000) -> str:
    """At most ``limit`` characters (plus an ellipsis), cut at a space when one is near the end."""
    t = text.strip()
    if len(t) <= limit:
        return t
    cut = t.rfind(" ", 0, limit)
    return t[: cut if cut > limit * 0.8 else limit].rstrip() + " …"


_PARA = re.compile(r"\n\s*\n")
_SENT = re.compile(r"(?<=[.!?。！？])\s+")


def chunk_paragraphs(text: str, max_chars: int = 1500, min_chars: int = 200) -> Iterator[str]:
    """Greedy merge of blank-line separated paragraphs into passages of about ``max_chars``.

    A passage is emitted once it reaches 60% of ``max_chars``; an over-long paragraph is split at
    sentence ends (so one very long sentence may exceed ``max_chars``)."""
    buf = ""
    for p in (p.strip() for p in _PARA.split(text)):
        if not p:
            continue
        if len(p) > max_chars:
            if buf:
                yield buf
                buf = ""
            cur = ""
            for s in _SENT.split(p):
                if cur and len(cur) + len(s) + 1 > max_chars:
                    yield cur
                    cur = ""
                cur = (cur + " " + s).strip()
            buf = cur
            continue
        if buf and len(buf) + len(p) + 2 > max_chars:
            yield buf
            buf = ""
        buf = (buf + "\n\n" + p).strip()
        if len(buf) >= min_chars and len(buf) >= max_chars * 0.6:
            yield buf
            buf = ""
    if buf:
        yield buf


def _hard_split(piece: str, limit: int) -> Iterator[str]:
    """``piece`` in parts of at most ``limit`` chars, cut at the last newline or space if any."""
    while len(piece) > limit:
        cut = max(piece.rfind("\n", 0, limit + 1), piece.rfind(" ", 0, limit + 1))
        if cut < limit // 2:
            cut = limit
        yield piece[:cut].rstrip()
        piece = piece[cut:].lstrip()
    if piece:
        yield piece


def split_at_paragraphs(text: str, limit: int = 1500, max_chunks: int = 2) -> list[str]:
    """The first ``max_chunks`` chunks of ``text``, each at most ``limit`` characters, packing
    whole paragraphs where they fit and cutting a longer paragraph at lines or spaces."""
    chunks: list[str] = []
    buf = ""
    for para in (p.strip() for p in _PARA.split(text)):
        for piece in _hard_split(para, limit) if para else ():
            if buf and len(buf) + 2 + len(piece) > limit:
                chunks.append(buf)
                if len(chunks) == max_chunks:
                    return chunks
                buf = ""
            buf = f"{buf}\n\n{piece}" if buf else piece
    if buf and len(chunks) < max_chunks:
        chunks.append(buf)
    return chunks


def jsonl(text: str) -> list[Any]:
    # split on "\n" only: some prompts contain U+2028, which str.splitlines() would break on
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def csv_rows(text: str, *, comment: str | None = None,
             delimiter: str = ",") -> list[dict[str, str]]:
    """CSV with a header row; lines starting with ``comment`` (PyRIT's ``#`` preamble) dropped."""
    if comment is not None:
        text = "".join(x for x in text.splitlines(True) if not x.startswith(comment))
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def _fold(node: ast.expr) -> str | None:
    """The value of a string expression: literal, f-string ("{expr}" kept) or "a" + "b"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                out.append(str(v.value))
            elif isinstance(v, ast.FormattedValue):
                out.append("{" + ast.unparse(v.value) + "}")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _fold(node.left), _fold(node.right)
        if a is not None and b is not None:
            return a + b
    return None


def py_strings(source: str, min_len: int = 1) -> Iterator[tuple[str, str]]:
    """(assigned name, string) for each string assigned or passed as a keyword in ``source``."""
    for node in ast.walk(ast.parse(source)):
        target: ast.expr
        if isinstance(node, ast.Assign):
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.keyword):
            target, value = ast.Name(id=node.arg or ""), node.value
        else:
            continue
        s = _fold(value)
        if s is None or len(s) < min_len:
            continue
        name = ""
        if isinstance(target, ast.Name):
            name = target.id
        elif isinstance(target, ast.Attribute):
            name = target.attr
        yield name, s


def literal_lists(source: str) -> Iterator[tuple[str, list[Any]]]:
    """(name, value) for each module-level assignment of a list literal."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            target: ast.expr = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        try:
            value = ast.literal_eval(node.value) if node.value is not None else None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, list):
            yield (target.id if isinstance(target, ast.Name) else "?"), value
