"""Home regions, the global home register (``bus.home_claims``) against a real nats-server started
with the regions' role identities and home routing: a gate learns a migration from the register's
notice (not after its minute of cache), and two regions claiming one new account at once end
with one home; without the register's watch a gate falls back to its cache's expiry, counted.
ext_proc gates route homes as the proxy does (``csp.extproc``)."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from extproc_testkit import DOOR, Exchange, body_of, request_body, request_headers
from node_support import run_cli
from region_support import region_database

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.home_claims import CLAIMS_BUCKET, HomeClaims
from safeguards.adapters.bus.homes import HomeDirectory
from safeguards.adapters.bus.nats_auth import (
    NatsRole,
    make_identities,
    nats_identity,
    server_authorization,
)
from safeguards.adapters.bus.signing import load_signer
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.extproc import ExtProcConfig, ExtProcServer
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.homes import HomeRouting
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore
from safeguards.core.codec import decode_signal, encode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import RequestObserved
from safeguards.core.homes import HomeEntry
from safeguards.core.policy import default_policy
from safeguards.core.subjects import enforce_subject, stream_name

from store_events import make_request

PARTITIONS = 16
REGIONS = ("us", "eu", "ap")
NOW = datetime(2026, 12, 6, tzinfo=UTC)


async def home_of(routing: HomeRouting, request: GateRequest) -> HomeEntry | None:
    """The account's home where it is another region, its enforcement followed: what the
    admission does with a request (``lookup`` then ``follow``)."""
    entry, first = await routing.lookup(request.account_id)
    if entry is not None:
        await routing.follow(request, entry, first)
    return entry


def _authorization(*, register: bool = True) -> dict[str, Any]:
    authorization = server_authorization(make_identities(REGIONS), home_routing=True)
    if not register:  # a server whose configuration predates the register
        for user in authorization["users"]:
            allow = user["permissions"]["publish"]["allow"]
            user["permissions"]["publish"]["allow"] = [s for s in allow if CLAIMS_BUCKET not in s]
    return authorization


@pytest.fixture
def secured(state: Path, tmp_path: Path) -> Any:
    with EmbeddedNats(tmp_path / "nats", authorization=_authorization()) as server:
        yield server.url


@pytest.fixture
def unregistered(state: Path, tmp_path: Path) -> Any:
    with EmbeddedNats(tmp_path / "nats", authorization=_authorization(register=False)) as server:
        yield server.url


@contextlib.asynccontextmanager
async def gate_routing(url: str, region: str, *, cache_s: float = 60.0
                       ) -> AsyncIterator[HomeRouting]:
    """A region's gate home routing on its own connection (as the gate's identity)."""
    link = BusLink(url, name=f"{region}-gate", identity=nats_identity(region, NatsRole.GATE))
    peers = tuple(r for r in REGIONS if r != region)
    routing = HomeRouting(link, region, PARTITIONS, peers, Gate(default_policy()),
                          cache_s=cache_s, lookup_deadline_s=5.0)
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        await tg.start(routing.run)
        yield routing
        tg.cancel_scope.cancel()


async def until(check: Any, within_s: float = 15.0, step_s: float = 0.01) -> None:
    with anyio.fail_after(within_s):
        while not check():  # noqa: ASYNC110 - what it waits for has no event
            await anyio.sleep(step_s)


async def _provision(url: str, regions: tuple[str, ...]) -> None:
    """The regions' streams, as their nodes make them (a gate reads a home's enforcement)."""
    for region in regions:
        nc = await connect(url, name=f"{region}-node", once=True,
                           identity=nats_identity(region, NatsRole.NODE))
        try:
            await ensure_gate_streams(nc.jetstream(), region)
        finally:
            await nc.close()


async def test_a_gate_that_kept_the_old_home_routes_to_the_new_one_after_migrate_home(
        secured: Any, postgres_server: Any) -> None:
    """ap's gate routed the account to us (kept for a minute); migrate-home us -> eu: its next
    request goes to eu, within a second of the migration's end."""
    url = secured
    us_url = await region_database(postgres_server, "sg_notice")
    eu_url = await region_database(postgres_server, "sg_notice")
    add_operator("us", "alice", "admin")
    account = f"acct-move-{secrets.token_hex(3)}"
    async with PostgresEventStore("us", us_url) as us_store:
        await us_store.append(make_request(account, "us", 0, 2))
    assert await run_cli("ops", "home", account, "--region", "us", "--onboard", "--nats", url,
                         "--partitions", str(PARTITIONS)) == 0
    await _provision(url, REGIONS)
    async with gate_routing(url, "ap") as ap:
        await until(lambda: ap.watching)
        kept = await home_of(ap, GateRequest(account, "r1"))
        assert kept is not None and kept.home == "us"
        assert (await home_of(ap, GateRequest(account, "r2"))) == kept  # from memory now
        started = time.monotonic()
        assert await run_cli("ops", "migrate-home", account, "--from", "us", "--to", "eu",
                             "--operator", "alice", "--nats", url, "--from-database-url",
                             us_url, "--to-database-url", eu_url) == 0
        returned = time.monotonic()
        await until(lambda: ap.dropped >= 1, within_s=5.0)
        learned = time.monotonic()
        moved = await home_of(ap, GateRequest(account, "r3"))
        assert moved is not None and (moved.home, moved.set_by) == ("eu", "migration")
        assert ap.failures == 0 and ap.notice_failures == 0
        lag = max(0.0, learned - returned)
        assert lag < 1.0  # (its cache alone: up to 60 s)
        # from a register write to the kept home's expiry, 20 times (an operator's notices)
        eu_op = await connect(url, name="eu-op", once=True,
                              identity=nats_identity("eu", NatsRole.OPERATOR))
        try:
            claims = await HomeClaims.open(eu_op.jetstream())
            lags = []
            for _ in range(20):
                assert (await home_of(ap, GateRequest(account, "r4"))) is not None  # kept again
                dropped, written = ap.dropped, time.monotonic()
                await claims.notice(account, moved)
                await until(lambda: ap.dropped > dropped, within_s=5.0, step_s=0.001)  # noqa: B023
                lags.append(time.monotonic() - written)
        finally:
            await eu_op.close()
        lags.sort()
        print(json.dumps({"migrate_home_s": round(returned - started, 3),
                          "stale_after_migrate_home_s": round(lag, 3),
                          "notice_to_drop_ms_p50": round(lags[10] * 1000, 1),
                          "notice_to_drop_ms_max": round(lags[-1] * 1000, 1)}))
        assert lags[-1] < 1.0


async def test_a_level_set_at_home_reaches_a_gate_serving_the_account_before_its_next_request(
        secured: Any) -> None:
    """An eu account called the us gate once; eu's relay then suspends it: the us gate's sweep
    applies the command within about ``refresh_s`` with no further request (a region hopper's
    next request there meets it; before the sweeps, it met the old level until a request found
    its refresh due, then the one after that met the new one)."""
    url = secured
    account = f"acct-hop-{secrets.token_hex(3)}"
    await _provision(url, REGIONS)
    eu_op = await connect(url, name="eu-op", once=True,
                          identity=nats_identity("eu", NatsRole.OPERATOR))
    relay = await connect(url, name="eu-relay", once=True,
                          identity=nats_identity("eu", NatsRole.NODE))
    try:
        directory = await HomeDirectory.open(eu_op.jetstream(), "eu")
        await directory.put(account, HomeEntry("eu", PARTITIONS, "onboarding", NOW.isoformat()))
        async with gate_routing(url, "us") as us:
            await until(lambda: us.watching)
            home = await home_of(us, GateRequest(account, "r1"))
            assert home is not None and home.home == "eu"
            assert us.gate.level_of(account, gate_now()) == 0
            policy = default_policy()
            command = EnforcementCommand(
                command_id=f"{account}-7", account_id=account, region="eu", level=4,
                requests_per_minute=policy.rate_tiers[4].requests_per_minute,
                tokens_per_minute=policy.rate_tiers[4].tokens_per_minute,
                interventions=policy.ladder[4].interventions, expires_at=None, version=7,
                policy_version=policy.version, reason="operator.suspend", issued_at=NOW)
            subject, payload = enforce_subject("eu", account), encode_command(command)
            published = time.monotonic()
            await relay.jetstream().publish(subject, payload,
                                            headers=load_signer("eu").headers(subject, payload))
            await until(lambda: us.gate.level_of(account, gate_now()) == 4, within_s=5.0,
                        step_s=0.005)
            took_s = time.monotonic() - published
            assert us.sweep_reads >= 1 and us.failures == 0
            print(json.dumps({"home_command_to_peer_gate_s": round(took_s, 3)}))
            assert took_s < 2 * us.refresh_s + 0.5
    finally:
        await relay.close()
        await eu_op.close()


async def test_two_regions_claiming_one_new_account_at_once_agree_on_one_home(
        secured: Any) -> None:
    """us's and eu's gates serve the first requests of the same new accounts at the same
    moment: for each, both route to one home and only that home's directory holds it."""
    url = secured
    accounts = [f"acct-new-{i}-{secrets.token_hex(3)}" for i in range(24)]
    homes: dict[str, dict[str, str]] = {a: {} for a in accounts}
    await _provision(url, ("us", "eu"))
    async with gate_routing(url, "us") as us, gate_routing(url, "eu") as eu:
        await until(lambda: us.watching and eu.watching)

        async def first_use(routing: HomeRouting, account: str) -> None:
            found = await home_of(routing, GateRequest(account, f"r-{routing.region}"))
            homes[account][routing.region] = routing.region if found is None else found.home

        async with anyio.create_task_group() as tg:
            for account in accounts:
                tg.start_soon(first_use, us, account)
                tg.start_soon(first_use, eu, account)
        assert us.failures == 0 and eu.failures == 0
        assert us.claimed + eu.claimed == len(accounts)
    operators = {r: await connect(url, name=f"{r}-op", once=True,
                                  identity=nats_identity(r, NatsRole.OPERATOR))
                 for r in ("us", "eu")}
    try:
        directories = {r: await HomeDirectory.open(nc.jetstream(), r)
                       for r, nc in operators.items()}
        for account in accounts:
            (home,) = set(homes[account].values())  # both gates route it to one region
            held = {r: await d.local(account) for r, d in directories.items()}
            assert [r for r, entry in held.items() if entry is not None] == [home]
            entry = held[home]
            assert entry is not None and (entry.home, entry.set_by) == (home, "first_use")
    finally:
        for nc in operators.values():
            await nc.close()
    print(json.dumps({"raced_accounts": len(accounts),
                      "claimed_by_us": us.claimed, "claimed_by_eu": eu.claimed}))


async def test_without_the_register_watch_a_gate_falls_back_to_its_cache_expiry(
        unregistered: Any) -> None:
    """A server that does not let the gate watch the register: counted, and a moved home is
    learned when the kept one expires (``cache_s``)."""
    url = unregistered
    account = f"acct-ttl-{secrets.token_hex(3)}"
    op = await connect(url, name="us-op", once=True,
                       identity=nats_identity("us", NatsRole.OPERATOR))
    eu_op = await connect(url, name="eu-op", once=True,
                          identity=nats_identity("eu", NatsRole.OPERATOR))
    try:
        us_directory = await HomeDirectory.open(op.jetstream(), "us")
        eu_directory = await HomeDirectory.open(eu_op.jetstream(), "eu")
        await us_directory.put(account, HomeEntry("us", PARTITIONS, "onboarding",
                                                  NOW.isoformat()))
        await _provision(url, REGIONS)
        async with gate_routing(url, "ap", cache_s=1.0) as ap:
            await until(lambda: ap.notice_failures >= 1)
            assert not ap.watching
            kept = await home_of(ap, GateRequest(account, "r1"))
            assert kept is not None and kept.home == "us"
            await eu_directory.put(account, HomeEntry("eu", PARTITIONS, "migration",
                                                      NOW.isoformat()))
            await us_directory.remove(account)
            assert (await home_of(ap, GateRequest(account, "r2"))) == kept  # still kept
            await anyio.sleep(1.05)
            moved = await home_of(ap, GateRequest(account, "r3"))
            assert moved is not None and moved.home == "eu"
            assert ap.dropped == 0 and ap.notice_failures >= 1
    finally:
        await op.close()
        await eu_op.close()


async def test_an_extproc_gate_routes_an_account_homed_elsewhere_to_its_home(
        secured: Any) -> None:
    """ext_proc with peers: an eu account's request signal goes to eu's inputs, none to us's;
    the cross-region board is followed as on the proxy."""
    url = secured
    account = f"acct-eu-{secrets.token_hex(3)}"
    nodes = {r: await connect(url, name=f"{r}-node", once=True,
                              identity=nats_identity(r, NatsRole.NODE)) for r in ("us", "eu")}
    eu_op = await connect(url, name="eu-op", once=True,
                          identity=nats_identity("eu", NatsRole.OPERATOR))
    try:
        for region, nc in nodes.items():
            await ensure_gate_streams(nc.jetstream(), region)
        await (await HomeDirectory.open(eu_op.jetstream(), "eu")).put(
            account, HomeEntry("eu", PARTITIONS, "onboarding", NOW.isoformat()))
        server = ExtProcServer(ExtProcConfig(
            region="us", nats_url=url, listen="127.0.0.1:0", feed_heartbeat_s=0.25,
            feed_cleanup_timeout_s=0.25,
            caller_auth="loopback", caller_keys=(DOOR,), partitions=PARTITIONS,
            peer_regions=("eu",)), default_policy())
        homes, cross = server.inline.homes, server.inline.cross
        assert homes is not None and cross is not None and server.admission.cross is cross
        async with server.running():
            assert server.feed is not None
            await until(server.feed.ready.is_set, 10.0, 0.05)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                ex = Exchange(pb_grpc.ExternalProcessorStub(channel).Process())
                await ex.send(request_headers(account))
                r = await ex.send(request_body(body_of("What is a good banana bread recipe?")))
                assert r.HasField("request_body")
                await ex.close()
            await until(lambda: server.telemetry.sent >= 1, 10.0, 0.05)
        assert homes.forwarded >= 1 and homes.failures == 0
        eu_inputs = await nodes["eu"].jetstream().pull_subscribe(
            "sg.eu.acct.>", stream=stream_name("eu", "INPUTS"))
        signal = decode_signal((await eu_inputs.fetch(1, timeout=5))[0].data)
        assert (signal.account_id, signal.region) == (account, "eu")
        assert isinstance(signal.observation, RequestObserved)
        assert signal.observation.surface == "ext_proc"
        info = await nodes["us"].jetstream().stream_info(stream_name("us", "INPUTS"))
        assert info.state.messages == 0  # nothing of it in us's history
    finally:
        for nc in (*nodes.values(), eu_op):
            await nc.close()
