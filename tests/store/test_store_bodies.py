"""The store's body packer writes exactly the codec's bytes, for every body type."""

from __future__ import annotations

from hypothesis import given, settings

from safeguards.adapters.store.bodies import BodyPacker
from safeguards.core import codec
from safeguards.core.events import EVENT_TYPES, EventBody

from strategies import bodies

PACKER = BodyPacker()


@settings(max_examples=300)
@given(bodies)
def test_packed_bodies_are_the_codecs_bytes(body: EventBody) -> None:
    packed = PACKER.pack(body)
    assert packed == codec.pack_body(body)
    assert codec.unpack_body(body.TYPE, body.SCHEMA_VERSION, packed) == body


def test_every_body_type_takes_the_fast_path() -> None:
    assert set(PACKER._fast) == set(EVENT_TYPES.values())
