"""The fold builds each state with ``state._state`` (plain slot stores, then the class): what it
builds must be an AccountState like one its constructor makes, frozen, equal, hashable and
encodable, whatever the history."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.core import codec
from safeguards.core.events import Event, EventBody
from safeguards.core.state import AccountState, _state, fold, initial_state

from strategies import bodies

T0 = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)


def test_the_builder_takes_every_field_in_the_states_order() -> None:
    assert tuple(inspect.signature(_state).parameters) == AccountState.__slots__ == tuple(
        f.name for f in dataclasses.fields(AccountState))


@settings(max_examples=150, deadline=None)
@given(st.lists(bodies, min_size=1, max_size=12))
def test_a_folded_state_is_the_state_its_constructor_makes(history: list[EventBody]) -> None:
    events = [Event(f"e{i}", "acct", "eu", i + 1, T0, f"s{i}", "c", None, body)
              for i, body in enumerate(history)]
    state = fold(initial_state("acct", "eu"), events)
    same = AccountState(*(getattr(state, f.name) for f in dataclasses.fields(AccountState)))
    assert type(state) is AccountState and state == same and hash(state) == hash(same)
    assert repr(state) == repr(same) and state.version == len(history)
    assert codec.decode_state(codec.encode_state(state)) == state
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.level = 5  # type: ignore[misc]
