"""The home directory and what home routing may carry, against a real nats-server started with
the regions' role identities and home routing: the directory claims on first use once and reads
peers by key, a us gate may reach only eu's inputs and directory entries by key, and a
forwarding key carries nothing but request metadata and scores. End to end:
``test_home_regions``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.homes import HomeDirectory
from safeguards.adapters.bus.nats_auth import (
    NatsRole,
    nats_identity,
)
from safeguards.adapters.bus.producer_auth import (
    load_forwarders,
    load_forwarding_keys,
    load_producer_keys,
)
from safeguards.core.codec import encode_signal
from safeguards.core.events import OperatorActionTaken, RequestObserved, Signal
from safeguards.core.homes import HomeEntry, directory_key
from safeguards.core.operators import InputChecks
from safeguards.core.subjects import inputs_subject

from bus_support import refused_by_server

PARTITIONS = 16
NOW = datetime(2026, 12, 6, tzinfo=UTC)


async def test_first_use_claims_once_and_peers_read_by_key(secured: Any) -> None:
    url, _ = secured
    gate_us = await connect(url, name="us-gate", identity=nats_identity("us", NatsRole.GATE))
    gate_eu = await connect(url, name="eu-gate", identity=nats_identity("eu", NatsRole.GATE))
    try:
        us = await HomeDirectory.open(gate_us.jetstream(), "us", ("eu",))
        eu = await HomeDirectory.open(gate_eu.jetstream(), "eu", ("us",))
        mine = HomeEntry("us", PARTITIONS, "first_use", NOW.isoformat())
        assert await us.claim("acct-1", mine) == mine
        late = HomeEntry("us", 8, "first_use", NOW.isoformat())
        assert await us.claim("acct-1", late) == mine  # the first claim stands
        assert await eu.lookup("acct-1") == mine  # eu finds it by key in us's directory
        assert await eu.lookup("acct-unknown") is None
        # a malformed entry is counted and skipped, never trusted
        kv = await gate_us.jetstream().key_value("sg_us_homes")
        await kv.put(directory_key("acct-bad"), b'{"home": "../x"}')
        assert await us.local("acct-bad") is None and us.malformed == 1
    finally:
        await gate_us.close()
        await gate_eu.close()


async def test_home_routing_opens_only_metadata_and_reads_by_key(secured: Any) -> None:
    """The us gate may publish on eu's inputs and read eu's entries by key; eu's content,
    enforcement, classify, directory writes and every eu subscription stay refused."""
    url, _ = secured
    gate = nats_identity("us", NatsRole.GATE)
    assert gate is not None
    refused = await refused_by_server(
        url, gate,
        publish=("sg.eu.acct.3.t0", "sg.eu.content.t0", "sg.eu.enforce.t0", "sg.eu.classify",
                 "$KV.sg_eu_homes.h1", "$JS.API.CONSUMER.CREATE.SG_EU_ENFORCE",
                 "$JS.API.STREAM.MSG.GET.SG_EU_ENFORCE",
                 "$JS.API.DIRECT.GET.SG_EU_ENFORCE.sg.eu.enforce.t0"),
        subscribe=("sg.eu.enforce.>", "sg.eu.acct.>", "sg.eu.content.>"))
    assert {s for kind, s in refused if kind == "publish"} == {
        "sg.eu.content.t0", "sg.eu.enforce.t0", "sg.eu.classify", "$kv.sg_eu_homes.h1",
        "$js.api.consumer.create.sg_eu_enforce", "$js.api.stream.msg.get.sg_eu_enforce"}
    assert {s for kind, s in refused if kind == "subscription"} == {
        "sg.eu.enforce.>", "sg.eu.acct.>", "sg.eu.content.>"}


def test_a_forwarding_key_carries_only_request_metadata_and_scores(state: Path) -> None:
    forwarding = load_forwarding_keys("us", "eu")
    checks = InputChecks(producers=load_producer_keys("eu"),
                         forwarders=load_forwarders("eu", ("us",)))
    request = Signal("req:1", "acct-1", "eu", NOW, "c1", RequestObserved(
        "r1", "m", "proxy", 10, 5, 40, "ab" * 32, False, "allow"))
    note = Signal("op:1", "acct-1", "eu", NOW, "c2", OperatorActionTaken(
        "op", "note", None, None, "free text from another region"))
    tick = Signal("tick:1", "acct-1", "eu", NOW, "c3")
    subject = inputs_subject("eu", PARTITIONS, "acct-1")
    for signal, allowed in ((request, True), (tick, False)):
        data = encode_signal(signal)
        problem = checks.problem(subject, data, forwarding.headers(subject, data), signal)
        assert (problem is None) is allowed, problem
    data = encode_signal(note)  # an operator action needs an operator's signature, never a key
    assert checks.problem(subject, data, forwarding.headers(subject, data), note) is not None
    # a serving region's own producer key is not eu's: refused
    own = load_producer_keys("us")
    data = encode_signal(request)
    assert checks.problem(subject, data, own.headers(subject, data), request) is not None
