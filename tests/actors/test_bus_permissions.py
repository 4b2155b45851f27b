"""Least-privilege NATS against a real nats-server started with our authorization block: no
anonymous or unknown client gets in, each role of a region may use only its own subjects, and no
role may touch another region's (``bus.nats_auth``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats.errors
import pytest
from nats.aio.msg import Msg

from safeguards.adapters.bus.batch_bucket import batch_bucket_name
from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.leases import LeaseBucket, presence_subject
from safeguards.adapters.bus.nats_auth import (
    NatsIdentity,
    NatsRole,
    make_identities,
    nats_identity,
    new_seed,
    role_permissions,
    server_authorization,
)
from safeguards.adapters.bus.nonce_bucket import nonce_bucket_name
from safeguards.adapters.bus.producer_auth import load_producer_keys
from safeguards.adapters.bus.streams import StreamSettings, provision_region
from safeguards.adapters.csp.batch_ledger import BatchEntry, BatchRecords, record_key
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.nonce_ledger import RegionLedger, ledger_key
from safeguards.adapters.embedded import EmbeddedNats

from bus_support import refused_by_server

REGIONS = ("us", "eu")
CALLER_SECRET = secrets.token_bytes(32)  # the front door's caller key (nonce ledger)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, NatsRole], NatsIdentity]:
    directory = tmp_path_factory.mktemp("nats-keys")
    return {(i.region, i.role): i for i in make_identities(REGIONS, directory=directory)}


@pytest.fixture(scope="module")
def secured_url(keys: dict[tuple[str, NatsRole], NatsIdentity],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    authorization = server_authorization(list(keys.values()))
    with EmbeddedNats(tmp_path_factory.mktemp("nats"), authorization=authorization) as server:
        yield server.url


def _pub(*subjects: str) -> set[tuple[str, str]]:
    return {("publish", s.lower()) for s in subjects}  # nats-py reports errors in lower case


def _sub(*subjects: str) -> set[tuple[str, str]]:
    return {("subscription", s.lower()) for s in subjects}


# role -> (publishes that must pass, publishes refused, subscriptions that must pass, refused)
CASES: dict[NatsRole, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    NatsRole.GATE: (
        ("sg.us.acct.3.t0", "sg.us.content.t0", "sg.us.classify",
         "$KV.sg_us_nonces.00ff00ff00ff00ff00ff00ff00ff00ff"),  # take a nonce, region-wide
        ("sg.us.enforce.t0", "$KV.sg_eu_nonces.00ff00ff00ff00ff00ff00ff00ff00ff",
         "$JS.API.STREAM.MSG.GET.KV_sg_us_nonces", "$JS.API.STREAM.PURGE.KV_sg_us_nonces",
         "sg.us.dlq.gate", "sg.eu.acct.3.t0", "sg.eu.classify",
         "$JS.API.STREAM.DELETE.SG_US_ENFORCE", "$JS.API.STREAM.PURGE.SG_US_INPUTS",
         "$JS.API.STREAM.CREATE.SG_US_ENFORCE", "$KV.sg_us_policy.current",
         "_INBOX_us_classifier.x"),
        ("_INBOX_us_gate.x.*",),
        ("sg.us.classify", "sg.us.enforce.>", "sg.us.acct.>", "_INBOX.>", "$KV.sg_us_nonces.>",
         "_INBOX_us_classifier.>", "sg.eu.enforce.>", ">"),
    ),
    NatsRole.NODE: (
        ("sg.us.enforce.t0", "sg.us.dlq.actors", "$KV.sg_us_leases.p1",
         "$JS.API.STREAM.CREATE.SG_US_INPUTS", "sg.us.acct.3.prompt~3Aab",
         "$JS.API.DIRECT.GET.SG_US_INPUTS"),  # a partition's reads while its consumer elects
        ("sg.us.content.t0", "sg.us.classify", "sg.eu.enforce.t0", "sg.eu.dlq.actors",
         "sg.eu.acct.3.t0", "$JS.API.DIRECT.GET.SG_EU_INPUTS",
         "$JS.API.STREAM.DELETE.SG_US_INPUTS", "$KV.sg_eu_leases.p1",
         "$JS.API.STREAM.CREATE.SG_EU_INPUTS"),
        ("_INBOX_us_node.>",),
        ("sg.us.classify", "sg.us.content.>", "_INBOX_us_gate.>", "sg.eu.acct.>"),
    ),
    NatsRole.CLASSIFIER: (
        ("sg.us.acct.3.t0", "sg.us.dlq.classifier"),
        ("sg.us.enforce.t0", "sg.eu.acct.3.t0", "sg.us.content.t0", "_INBOX_us_gate.x",
         "$KV.sg_us_policy.current", "$JS.API.STREAM.DELETE.SG_US_CONTENT",
         "$KV.sg_us_nonces.00ff00ff00ff00ff00ff00ff00ff00ff"),
        ("sg.us.classify", "_INBOX_us_classifier.>"),
        ("sg.eu.classify", "sg.us.enforce.>", "_INBOX_us_gate.>"),
    ),
    NatsRole.OPERATOR: (
        # ops timeline's dead letters, ops gates verify's last command of an account
        ("sg.us.acct.3.t0", "$JS.API.STREAM.MSG.GET.SG_US_DLQ",
         "$JS.API.STREAM.MSG.GET.SG_US_ENFORCE"),
        ("sg.us.enforce.t0", "sg.us.content.t0", "sg.us.classify", "sg.eu.acct.3.t0",
         "$KV.sg_us_policy.current", "$JS.API.STREAM.PURGE.SG_US_DLQ",
         "$JS.API.STREAM.MSG.GET.SG_EU_DLQ", "$JS.API.STREAM.MSG.DELETE.SG_US_DLQ",
         "$JS.API.CONSUMER.CREATE.SG_US_DLQ", "$KV.sg_us_nonces.00ff00ff00ff00ff00ff00ff00ff00ff"),
        ("_INBOX_us_operator.>",),
        ("sg.us.classify", "sg.us.enforce.>", "sg.us.dlq.>"),
    ),
}


@pytest.mark.parametrize("role", list(NatsRole))
async def test_each_role_may_use_only_its_own_subjects(
        role: NatsRole, keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str) -> None:
    allowed_pub, denied_pub, allowed_sub, denied_sub = CASES[role]
    refused = await refused_by_server(secured_url, keys[("us", role)],
                                publish=allowed_pub + denied_pub,
                                subscribe=allowed_sub + denied_sub)
    assert refused == _pub(*denied_pub) | _sub(*denied_sub)


async def test_strangers_cannot_connect(secured_url: str, tmp_path: Path) -> None:
    with pytest.raises(BusUnavailable, match="authorization"):
        await connect(secured_url, name="anonymous", once=True, timeout_s=5)
    stranger = NatsIdentity("us", NatsRole.GATE, new_seed())  # a key the server never heard of
    with pytest.raises(BusUnavailable, match="authorization"):
        await connect(secured_url, name="stranger", once=True, timeout_s=5, identity=stranger)


async def test_a_gate_asks_classify_and_only_the_classifier_answers(
        keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str) -> None:
    classifier = await connect(secured_url, name="classifier", once=True,
                               identity=keys[("us", NatsRole.CLASSIFIER)])
    gate = await connect(secured_url, name="gate", once=True, identity=keys[("us", NatsRole.GATE)])
    try:
        async def answer(msg: Msg) -> None:
            await msg.respond(b"scores:" + msg.data)

        await classifier.subscribe("sg.us.classify", queue="classifier", cb=answer)
        await classifier.flush()
        reply = await gate.request("sg.us.classify", b"sealed", timeout=5)
        assert reply.data == b"scores:sealed"
        # the classifier's right to answer is only the asker's reply subject, once
        refused = await refused_by_server(secured_url, keys[("us", NatsRole.CLASSIFIER)],
                                    publish=("_INBOX_us_gate.forged",))
        assert refused == _pub("_INBOX_us_gate.forged")
    finally:
        await gate.close()
        await classifier.close()


async def test_the_node_provisions_and_the_gate_writes_and_follows(
        keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str) -> None:
    node = await connect(secured_url, name="node", once=True, identity=keys[("us", NatsRole.NODE)])
    gate = await connect(secured_url, name="gate", once=True, identity=keys[("us", NatsRole.GATE)])
    try:
        await provision_region(node.jetstream(), "us", StreamSettings())
        ack = await gate.jetstream().publish("sg.us.acct.3.t0", b"signal", timeout=5)
        assert ack.stream == "SG_US_INPUTS"
        sub = await gate.jetstream().subscribe("sg.us.enforce.>", stream="SG_US_ENFORCE",
                                               ordered_consumer=True)
        await node.jetstream().publish("sg.us.enforce.t0", b"command", timeout=5)
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"command"
        with pytest.raises(nats.errors.TimeoutError):  # refused: no answer from JetStream
            await gate.jetstream().delete_stream("SG_US_ENFORCE")
    finally:
        await gate.close()
        await node.close()


async def test_nodes_answer_each_others_presence_in_their_own_region_only(
        keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str) -> None:
    await _provision_regions(keys, secured_url)
    a, b, stranger = [await connect(secured_url, name=n, once=True, identity=keys[(r, role)])
                      for n, r, role in (("a", "us", NatsRole.NODE), ("b", "us", NatsRole.NODE),
                                         ("c", "eu", NatsRole.NODE))]
    try:
        leases_a, leases_b = [await LeaseBucket.open(nc.jetstream(), "us", 30, nc=nc)
                              for nc in (a, b)]
        await leases_b.announce("b")
        await b.flush()
        # b answers for itself: present to a (asked until it answers: a single ask right after
        # the subscription once met "no responders" in CI; eviction itself needs a renewal's
        # worth of them, never one)
        with anyio.fail_after(5):
            while True:
                if not await leases_a.gone("b"):
                    break
                await anyio.sleep(0.05)
        with pytest.raises(nats.errors.Error):  # another region's node may not ask
            await stranger.request(presence_subject("us", "b"), b"", timeout=0.5)
    finally:
        await b.close()
        await stranger.close()
    try:
        with anyio.fail_after(5):  # b's process is gone, once the server has seen it close
            while True:
                if await leases_a.gone("b"):
                    break
                await anyio.sleep(0.05)
    finally:
        await a.close()


def test_identities_come_from_the_environment_or_the_state_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert nats_identity("us", NatsRole.GATE, directory=tmp_path) is None  # anonymous
    made = {(i.region, i.role): i for i in make_identities(("us",), directory=tmp_path)}
    assert (tmp_path / "nats-us-gate.nk").stat().st_mode & 0o777 == 0o600
    again = nats_identity("us", NatsRole.GATE, directory=tmp_path)
    assert again == made[("us", NatsRole.GATE)]
    assert again.seed not in repr(again) and again.public_key.startswith("U")
    seed = new_seed()
    monkeypatch.setenv("SAFEGUARDS_NATS_NKEY_US_GATE", seed)
    assert nats_identity("us", NatsRole.GATE, directory=tmp_path).seed == seed  # type: ignore[union-attr]
    monkeypatch.setenv("SAFEGUARDS_NATS_NKEY_US_GATE", "not-a-seed")
    with pytest.raises(Exception):  # noqa: B017 - nkeys' own error type for a damaged seed
        nats_identity("us", NatsRole.GATE, directory=tmp_path)


def test_no_role_may_delete_purge_or_reach_another_region() -> None:
    for role in NatsRole:
        allowed = role_permissions("us", role)["publish"]["allow"]
        assert not [s for s in allowed if ".DELETE.SG_" in s.replace("CONSUMER.DELETE", "")]
        assert not [s for s in allowed if "PURGE" in s or "_EU_" in s or ".eu." in s
                    or s in (">", "$JS.API.>", "sg.>")]


def test_the_ops_command_prints_the_servers_authorization(
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from safeguards.regions.command_line import main

    assert main(["ops", "nats-authorization", "--region", "us", "--region", "eu"]) == 0
    users = json.loads(capsys.readouterr().out)["authorization"]["users"]
    assert len(users) == 2 * len(NatsRole)
    made = {i.public_key for i in make_identities(("us", "eu"))}  # the same keys, kept
    assert {u["nkey"] for u in users} == made
    seeds = [i.seed for i in make_identities(("us", "eu"))]
    assert not [s for s in seeds if s in json.dumps(users)]  # no secret in a server's config
    assert main(["ops", "nats-authorization", "--region", "U S"]) == 2


async def _provision_regions(keys: dict[tuple[str, NatsRole], NatsIdentity],
                             secured_url: str) -> None:
    """Each region's nodes provision its streams, its nonce ledger and its batch ledger."""
    for region in REGIONS:
        node = await connect(secured_url, name="node", once=True,
                             identity=keys[(region, NatsRole.NODE)])
        try:
            await provision_region(node.jetstream(), region)
        finally:
            await node.close()


async def test_the_gate_may_only_create_keys_in_its_own_regions_ledger(
        keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str,
        tmp_path: Path) -> None:
    await _provision_regions(keys, secured_url)
    gate = await connect(secured_url, name="gate", once=True,
                         identity=keys[("us", NatsRole.GATE)])
    try:
        own = RegionLedger("us", lambda: gate, mode="required", deadline_s=1.0)
        nonce = secrets.token_hex(16)
        assert await own.take(CALLER_SECRET, nonce) is None
        assert await own.take(CALLER_SECRET, nonce) == "replayed"
        foreign = RegionLedger("eu", lambda: gate, mode="required", deadline_s=0.2)
        with pytest.raises(BadRequest):  # the server drops the publish: no answer, 503
            await foreign.take(CALLER_SECRET, secrets.token_hex(16))
    finally:
        await gate.close()
    us, eu = nonce_bucket_name("us"), nonce_bucket_name("eu")
    digest = ledger_key(CALLER_SECRET, secrets.token_hex(16))
    denied = (f"$KV.{eu}.{digest}", f"$JS.API.STREAM.INFO.KV_{us}",
              f"$JS.API.DIRECT.GET.KV_{us}.$KV.{us}.{digest}", f"$JS.API.STREAM.MSG.GET.KV_{us}",
              f"$JS.API.CONSUMER.CREATE.KV_{us}", f"$JS.API.STREAM.PURGE.KV_{us}",
              f"$JS.API.STREAM.CREATE.KV_{us}", f"$JS.API.STREAM.INFO.KV_{eu}")
    refused = await refused_by_server(secured_url, keys[("us", NatsRole.GATE)],
                                      publish=(f"$KV.{us}.{digest}", *denied),
                                      subscribe=(f"$KV.{us}.>",))
    assert refused == ({("publish", s.lower()) for s in denied}
                       | {("subscription", f"$kv.{us}.>")})
    # eu's ledger holds nothing of us's gate; us's, the one nonce it took
    node = await connect(secured_url, name="node", once=True, identity=keys[("eu", NatsRole.NODE)])
    try:
        assert (await node.jetstream().stream_info(f"KV_{eu}")).state.messages == 0
    finally:
        await node.close()


async def test_the_gate_writes_and_reads_its_own_regions_batch_ledger_by_key_only(
        keys: dict[tuple[str, NatsRole], NatsIdentity], secured_url: str) -> None:
    await _provision_regions(keys, secured_url)
    gate = await connect(secured_url, name="gate", once=True,
                         identity=keys[("us", NatsRole.GATE)])
    batch_id = "msgbatch_" + secrets.token_hex(8)
    entry = BatchEntry({}, {"x": {"type": "errored"}}, batch_id=batch_id, account="acct-b")
    try:
        own = BatchRecords("us", lambda: gate, load_producer_keys("us"), deadline_s=1.0)
        assert await own.put(entry) and not own.errors
        back = await own.get(batch_id)
        assert back is not None and back.refused == entry.refused
        foreign = BatchRecords("eu", lambda: gate, load_producer_keys("eu"), deadline_s=0.2)
        assert not await foreign.put(entry) and await foreign.get(batch_id) is None
        assert set(foreign.errors) == {("put", "timeout"), ("get", "timeout")}
    finally:
        await gate.close()
    us, eu = batch_bucket_name("us"), batch_bucket_name("eu")
    key = record_key(batch_id, 0)
    denied = (f"$KV.{eu}.{key}", f"$JS.API.DIRECT.GET.KV_{eu}.$KV.{eu}.{key}",
              f"$JS.API.STREAM.INFO.KV_{us}", f"$JS.API.STREAM.MSG.GET.KV_{us}",
              f"$JS.API.CONSUMER.CREATE.KV_{us}", f"$JS.API.STREAM.PURGE.KV_{us}",
              f"$JS.API.DIRECT.GET.KV_{us}")
    refused = await refused_by_server(secured_url, keys[("us", NatsRole.GATE)],
                                      publish=(f"$KV.{us}.{key}", *denied),
                                      subscribe=(f"$KV.{us}.>",))
    assert refused == ({("publish", s.lower()) for s in denied}
                       | {("subscription", f"$kv.{us}.>")})
