"""Reading W3C ``traceparent`` values from hostile peers: exactly the valid ones are read, the
rest are malformed (never an exception), and what is written reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from safeguards.core.trace_context import (
    TraceParent,
    format_traceparent,
    parse_traceparent,
    read_traceparent,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_value_is_read() -> None:
    assert parse_traceparent(VALID) == TraceParent(0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                   0x00f067aa0ba902b7, True)
    assert parse_traceparent(VALID[:-2] + "00") == TraceParent(
        0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, False)
    # a later version may append fields after a dash: its first four are read
    assert parse_traceparent("01" + VALID[2:] + "-later") is not None


def test_hostile_values_are_malformed_not_errors() -> None:
    hostile = [
        "", "00", VALID.upper(), VALID + "-x", VALID[:-1], " " + VALID[1:],
        "ff" + VALID[2:],  # version ff is invalid
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01" + VALID[2:] + "x",  # a later version's extra fields start with a dash
        "01" + VALID[2:] + "-" + "a" * 10_000,  # longer than anything read
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u0661",  # a non-ASCII digit
    ]
    for value in hostile:
        assert parse_traceparent(value) is None, value
        assert read_traceparent({"traceparent": value}) == (None, True)


def test_absent_is_not_malformed() -> None:
    assert read_traceparent(None) == (None, False)
    assert read_traceparent({}) == (None, False)
    assert read_traceparent({"Nats-Msg-Id": "x"}) == (None, False)
    assert read_traceparent({"traceparent": VALID})[1] is False


@given(st.text(max_size=80))
def test_no_text_raises(value: str) -> None:
    parsed = parse_traceparent(value)
    assert parsed is None or format_traceparent(*parsed)[3:52] == value[3:52]


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans())
def test_what_is_written_reads_back(trace_id: int, span_id: int, sampled: bool) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, sampled)) == TraceParent(
        trace_id, span_id, sampled)
