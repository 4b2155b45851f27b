"""What of a conversation is scored: every text-bearing block, each earlier turn once."""

from __future__ import annotations

import json

import pytest

from safeguards.adapters.csp.messages_api import BadRequest, parse_messages_request
from safeguards.adapters.csp.turns import (
    CONTEXT_CHARS,
    SeenTurns,
    block_texts,
    conversation_of,
    newest_user_text,
    scoring_text,
)
from safeguards.core.content import CLIP_MARK, clip_middle


def _body(messages: list[dict[str, object]], system: object = None) -> bytes:
    doc: dict[str, object] = {"model": "m", "max_tokens": 5, "messages": messages}
    if system is not None:
        doc["system"] = system
    return json.dumps(doc).encode()


def test_every_text_bearing_block_is_read() -> None:
    content = [
        {"type": "text", "text": "T1"},
        {"type": "image", "source": {"type": "base64", "data": "aGVsbG8="}},
        {"type": "tool_result", "tool_use_id": "x", "content": [
            {"type": "text", "text": "T2"},
            {"type": "search_result", "title": "T3", "source": "u",
             "content": [{"type": "text", "text": "T4"}]}]},
        {"type": "tool_result", "tool_use_id": "y", "content": "T5"},
        {"type": "document", "title": "T6", "context": "T7",
         "source": {"type": "text", "media_type": "text/plain", "data": "T8"}},
        {"type": "document",
         "source": {"type": "content", "content": [{"type": "text", "text": "T9"}]}},
        {"type": "tool_use", "id": "z", "name": "f", "input": {"a": "T10", "b": [1, {"c": "T11"}]}},
        {"type": "thinking", "thinking": "T12", "signature": "s"},
    ]
    _, conv = parse_messages_request(_body([{"role": "user", "content": content}],
                                           system=[{"type": "text", "text": "S1"}]))
    text = conv.all_text()
    for i in range(1, 13):
        assert f"T{i}" in text.split("\n")
    assert conv.turns[0].role == "system" and conv.turns[0].text == "S1"
    assert "aGVsbG8=" not in text


def test_deep_nesting_is_bounded() -> None:
    block: dict[str, object] = {"type": "text", "text": "deep"}
    for _ in range(50):
        block = {"type": "tool_result", "tool_use_id": "x", "content": [block]}
    assert list(block_texts(block)) == []


def test_malformed_requests_still_get_typed_400s() -> None:
    with pytest.raises(BadRequest):
        parse_messages_request(_body([{"role": "user", "content": [{"type": "text"}]}]))
    with pytest.raises(BadRequest):
        parse_messages_request(_body([{"role": "user", "content": 5}]))
    with pytest.raises(BadRequest):
        parse_messages_request(_body([{"role": "user", "content": "x"}], system=5))


def test_earlier_turns_are_scored_once_and_the_newest_always() -> None:
    seen = SeenTurns()
    first = conversation_of("be helpful", [{"role": "user", "content": "A" * 700}])
    assert scoring_text("acct", first, seen) == "be helpful\n" + "A" * 700
    follow = conversation_of("be helpful", [
        {"role": "user", "content": "A" * 700}, {"role": "assistant", "content": "B" * 700},
        {"role": "user", "content": "C" * 700}])
    # the system prompt and the first turn were seen; the model's answer was not
    assert scoring_text("acct", follow, seen) == "B" * 700 + "\n" + "C" * 700
    again = conversation_of("be helpful", [
        {"role": "user", "content": "A" * 700}, {"role": "assistant", "content": "B" * 700},
        {"role": "user", "content": "C" * 700}, {"role": "assistant", "content": "D" * 700},
        {"role": "user", "content": "E" * 700}])
    assert scoring_text("acct", again, seen) == "D" * 700 + "\n" + "E" * 700
    # another account has seen nothing
    assert scoring_text("other", first, seen).startswith("be helpful")


def test_a_short_follow_up_comes_with_context() -> None:
    seen = SeenTurns()
    long_turns = [{"role": "user", "content": "how do I x"},
                  {"role": "assistant", "content": "Z" * 900}]
    scoring_text("a", conversation_of(None, long_turns[:1]), seen)
    scoring_text("a", conversation_of(None, long_turns), seen)
    text = scoring_text("a", conversation_of(None, [*long_turns,
                                                    {"role": "user", "content": "and step 2?"}]),
                        seen)
    assert text.endswith("\nand step 2?")
    assert len(text) == CONTEXT_CHARS + 1
    assert text.startswith("Z")


def test_seen_turns_forget_the_oldest_beyond_capacity() -> None:
    seen = SeenTurns(capacity=3)
    keys = [SeenTurns.key("a", str(i)) for i in range(5)]
    for k in keys:
        seen.add(k)
    assert not seen.seen(keys[0]) and not seen.seen(keys[1]) and seen.seen(keys[4])


def test_clip_middle_keeps_head_and_tail() -> None:
    assert clip_middle("short", 10) == ("short", False)
    text = "H" * 100 + "M" * 1000 + "T" * 100
    clipped, was = clip_middle(text, 300)
    assert was and len(clipped) <= 300 and CLIP_MARK in clipped
    assert clipped.startswith("H" * 100) and clipped.endswith("T" * 100)


def test_the_newest_user_turn_is_what_a_prompt_link_is_made_of() -> None:
    conversation = conversation_of("be terse", [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "the newest"},
                                     {"type": "text", "text": "ask"}]},
        {"role": "assistant", "content": "Sure, here"},  # a prefill
    ])
    assert newest_user_text(conversation) == "the newest\nask"
    assert newest_user_text(conversation_of(None, [])) == ""
    assert newest_user_text(conversation_of("system only", [
        {"role": "assistant", "content": "hi"}])) == ""
