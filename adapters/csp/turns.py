"""What of a Messages request is scored: every text-bearing block, each turn once.

A request carries the whole conversation every time. Scoring all of it on every request counts
one borderline turn again on every follow-up, so the proxy scores:

- the **newest turn** (the last message), always, with a little of the turns before it as
  context (a short follow-up such as "now the second step" means nothing alone);
- any **earlier turn or system prompt this proxy has not seen** for the account (a conversation
  that started elsewhere, or fabricated earlier turns), once.

Text comes from every block that carries it: ``text``, ``system``, ``tool_result`` (its string or
nested blocks), ``document`` (plain-text sources, title and context), ``search_result``,
``tool_use`` input (every string value) and ``thinking``. What was seen is kept as keyed hashes
of (account, text) in a bounded LRU, never as text.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CONTEXT_CHARS = 600  # newest turn plus context stays within about one encoder window
MAX_DEPTH = 6  # nesting of blocks and tool inputs followed before giving up (hostile input)
SEEN_CAPACITY = 200_000  # (account, turn) hashes remembered per process


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "system", "user" or "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class Conversation:
    turns: tuple[Turn, ...]  # system first (if any), then the messages in order

    def all_text(self) -> str:
        return "\n".join(t.text for t in self.turns if t.text)


def block_texts(block: Any, depth: int = 0) -> Iterator[str]:
    """The text a content block carries, whatever its type (unknown types: their text fields)."""
    if depth > MAX_DEPTH or not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind == "text" or kind is None:
        if isinstance(block.get("text"), str):
            yield block["text"]
    elif kind == "thinking":
        if isinstance(block.get("thinking"), str):
            yield block["thinking"]
    elif kind == "tool_use" or kind == "server_tool_use":
        yield from _json_strings(block.get("input"), depth + 1)
    elif kind in ("tool_result", "search_result", "document"):
        for key in ("title", "context"):
            if isinstance(block.get(key), str):
                yield block[key]
        content = block.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for inner in content:
                yield from block_texts(inner, depth + 1)
        source = block.get("source")
        if isinstance(source, dict):
            if source.get("type") == "text" and isinstance(source.get("data"), str):
                yield source["data"]
            elif source.get("type") == "content" and isinstance(source.get("content"), list):
                for inner in source["content"]:
                    yield from block_texts(inner, depth + 1)
    elif isinstance(block.get("text"), str):
        yield block["text"]


def _json_strings(value: Any, depth: int) -> Iterator[str]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _json_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item, depth + 1)


def content_text(content: Any) -> str:
    """A message's or system prompt's text: a string, or its blocks' text joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for block in content for t in block_texts(block) if t)
    return ""


def newest_user_text(conversation: Conversation) -> str:
    """The text of the conversation's newest user turn ("" without one): what a prompt's link
    key is made of (``core.prompt_links``), whatever context came before it."""
    for turn in reversed(conversation.turns):
        if turn.role == "user":
            return turn.text
    return ""


def conversation_of(system: Any, messages: list[Any]) -> Conversation:
    turns = [Turn("system", content_text(system))] if system else []
    turns += [Turn(str(m.get("role")), content_text(m.get("content"))) for m in messages]
    return Conversation(tuple(turns))


class SeenTurns:
    """Which (account, turn text) pairs this process has already sent for scoring."""

    def __init__(self, capacity: int = SEEN_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def key(account: str, text: str) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h.update(account.encode())
        h.update(b"\x00")
        h.update(text.encode("utf-8", "surrogatepass"))
        return h.digest()

    def seen(self, key: bytes) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


def scoring_text(account: str, conversation: Conversation, seen: SeenTurns) -> str:
    """The text to score for this request: unseen earlier turns, then the newest turn with a
    little context before it. Marks what it returns as seen."""
    turns = [t for t in conversation.turns if t.text]
    if not turns:
        return ""
    *earlier, newest = turns
    parts: list[str] = []
    previous_included = False  # the turn just before the newest is already in ``parts``
    for turn in earlier:
        key = SeenTurns.key(account, turn.role + "\x00" + turn.text)
        previous_included = not seen.seen(key)
        if previous_included:
            parts.append(turn.text)
            seen.add(key)
    room = CONTEXT_CHARS - len(newest.text)
    if room > 0 and earlier and not previous_included:
        context = "\n".join(t.text for t in earlier[-2:])[-room:]
        parts.append(context)
    parts.append(newest.text)
    seen.add(SeenTurns.key(account, newest.role + "\x00" + newest.text))
    return "\n".join(parts)
