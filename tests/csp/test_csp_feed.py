"""The enforcement feed against a real JetStream: initial state, live updates, heartbeats, and
only what the region's relay signed applies."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime

import anyio
import nats
from anyio.abc import TaskGroup
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from csp_testkit import eventually
from nats.js.client import JetStreamContext

from safeguards.adapters.bus.signing import (
    KEY_ID_HEADER,
    CommandSigner,
    CommandVerifier,
    command_problem,
)
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.decision import THROTTLE_ACTION, GateRequest
from safeguards.adapters.csp.feed import EnforcementFeed
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.core.codec import encode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import Policy, default_policy
from safeguards.core.subjects import enforce_subject


def make_command(region: str, account: str, level: int, version: int,
                 policy: Policy) -> EnforcementCommand:
    tier = policy.rate_tiers[level]
    return EnforcementCommand(
        command_id=f"{account}-{version}", account_id=account, region=region, level=level,
        requests_per_minute=tier.requests_per_minute, tokens_per_minute=tier.tokens_per_minute,
        interventions=policy.ladder[level].interventions, expires_at=None, version=version,
        policy_version=policy.version, reason="test", issued_at=datetime.now(UTC),
    )


async def publish(js: JetStreamContext, signer: CommandSigner, command: EnforcementCommand,
                  subject: str | None = None) -> None:
    """As the relay does: the command on its account's subject, signed."""
    subject = subject or enforce_subject(command.region, command.account_id)
    payload = encode_command(command)
    await js.publish(subject, payload, headers=signer.headers(subject, payload))


async def start_feed(tg: TaskGroup, nats_url: str, region: str, gate: Gate,
                     verifier: CommandVerifier) -> EnforcementFeed:
    """A gate's enforcement feed over its own bus link, both running in ``tg``."""
    link = BusLink(nats_url)
    feed = EnforcementFeed(link, region, gate, verifier, heartbeat_s=0.2)
    await tg.start(link.run)
    await tg.start(feed.run)
    return feed


async def test_feed_reads_last_values_then_live_updates(nats_url: str) -> None:
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    signer = CommandSigner(Ed25519PrivateKey.generate())
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_gate_streams(js, region)
        await ensure_gate_streams(js, region)  # idempotent
        for account, level, version in [("a.1", 1, 1), ("a.1", 4, 2), ("b*2", 2, 7),
                                        ("c/3", 3, 1)]:
            await publish(js, signer, make_command(region, account, level, version, policy))
        junk_subject = enforce_subject(region, "junk")
        await nc.publish(junk_subject, b"\x93not a command",
                         headers=signer.headers(junk_subject, b"\x93not a command"))
        await nc.flush()

        gate = Gate(policy)
        async with anyio.create_task_group() as tg:
            feed = await start_feed(tg, nats_url, region, gate, signer.verifier())
            with anyio.fail_after(5):
                await feed.ready.wait()
            await eventually(lambda: gate.size == 3)
            now = time.time()
            assert gate.held_version("a.1") == 2 and gate.level_of("a.1", now) == 4
            assert gate.level_of("b*2", now) == 2 and gate.level_of("c/3", now) == 3
            # the undecodable one: counted, logged
            await eventually(lambda: feed.rejected == {"undecodable": 1})
            # live: a newer command applies, an older one does not
            await publish(js, signer, make_command(region, "a.1", 0, 3, policy))
            await eventually(lambda: gate.held_version("a.1") == 3)
            await publish(js, signer, make_command(region, "b*2", 0, 5, policy))
            await publish(js, signer, make_command(region, "d", 1, 1, policy))
            await eventually(lambda: gate.held_version("d") == 1)
            assert gate.held_version("b*2") == 7 and gate.commands_ignored >= 1
            # a command of another region on this region's stream is refused, and counted
            await publish(js, signer, make_command("zz", "e", 4, 1, policy),
                          enforce_subject(region, "e"))
            await eventually(lambda: feed.rejected.get("wrong_region") == 1)
            assert gate.held_version("e") is None
            # heartbeats keep the cache fresh while nothing changes
            before = gate.last_contact
            await anyio.sleep(0.6)
            assert gate.last_contact > before
            assert gate.staleness(time.time()) < 0.5
            tg.cancel_scope.cancel()
    finally:
        await nc.close()


class _FlakyGate(Gate):
    """A gate whose first ``apply`` raises, as a bug in it would."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.failures_left = 1

    def apply(self, command: EnforcementCommand, now: float | None = None, *,
              authoritative: bool = False) -> bool:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("a bug while applying")
        return super().apply(command, now, authoritative=authoritative)


async def test_a_failure_while_handling_a_command_is_counted_and_the_stream_re_read(
        nats_url: str) -> None:
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    signer = CommandSigner(Ed25519PrivateKey.generate())
    async with await nats.connect(nats_url) as nc:
        await ensure_gate_streams(nc.jetstream(), region)
        await publish(nc.jetstream(), signer, make_command(region, "acct", 4, 1, policy))
    gate = _FlakyGate(policy)
    async with anyio.create_task_group() as tg:
        feed = await start_feed(tg, nats_url, region, gate, signer.verifier())
        # the first delivery fails inside the callback; the next session applies it
        await eventually(lambda: gate.held_version("acct") == 1, 5)
        assert feed.callback_failures == 1 and feed.sessions >= 2
        tg.cancel_scope.cancel()


async def test_only_commands_the_relay_signed_for_their_subject_apply(nats_url: str) -> None:
    """The forgeries an outsider on the network could publish are refused by reason, and a
    forged command never pins the account: the relay's next real command still applies."""
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    relay = CommandSigner(Ed25519PrivateKey.generate())
    mallory = CommandSigner(Ed25519PrivateKey.generate())
    gate = Gate(policy)
    async with await nats.connect(nats_url) as nc, anyio.create_task_group() as tg:
        js = nc.jetstream()
        await ensure_gate_streams(js, region)
        feed = await start_feed(tg, nats_url, region, gate, relay.verifier())
        await publish(js, relay, make_command(region, "victim", 5, 3, policy))
        await eventually(lambda: gate.held_version("victim") == 3)
        subject = enforce_subject(region, "victim")
        # unsigned, at a version far ahead (it would pin the account) and level 0 (an unblock)
        forged = encode_command(make_command(region, "victim", 0, 2**62, policy))
        await js.publish(subject, forged)
        await publish(js, mallory, make_command(region, "victim", 0, 2**62, policy))
        # a real signature, with the key id swapped for the relay's
        headers = mallory.headers(subject, forged) | {KEY_ID_HEADER: relay.key_id}
        await js.publish(subject, forged, headers=headers)
        # the relay's real command for another account, replayed on the victim's subject
        await publish(js, relay, make_command(region, "other", 0, 9, policy), subject)
        # the relay's next real command for the victim
        await publish(js, relay, make_command(region, "victim", 1, 4, policy))
        await eventually(lambda: sum(feed.rejected.values()) == 4)
        assert feed.rejected == {"unsigned": 1, "unknown_key": 1, "bad_signature": 1,
                                 "wrong_subject": 1}
        await eventually(lambda: gate.held_version("victim") == 4)  # the relay's real one
        assert gate.level_of("victim", time.time()) == 1
        tg.cancel_scope.cancel()


def test_signed_commands_with_impossible_contents_are_refused() -> None:
    policy = default_policy()
    good = make_command("eu", "acct", 2, 7, policy)
    subject = enforce_subject("eu", "acct")
    assert command_problem(good, subject, "eu") is None
    assert command_problem(replace(good, level=6), subject, "eu") == "level_off_ladder"
    assert command_problem(replace(good, level=-1), subject, "eu") == "level_off_ladder"
    assert command_problem(replace(good, version=2**62), subject, "eu") == "version_out_of_range"
    assert command_problem(replace(good, version=0), subject, "eu") == "version_out_of_range"
    assert command_problem(good, enforce_subject("eu", "acct2"), "eu") == "wrong_subject"
    assert command_problem(good, subject.replace("sg.eu", "sg.us"), "us") == "wrong_region"


async def test_a_command_keeps_what_the_account_already_spent(nats_url: str) -> None:
    """A command carries the account's recent usage over to its tier: a level change never hands
    a rate-limit prober a fresh window (the feed applied commands without the time, and a prober
    warned at L1 mid-probe was not throttled again)."""
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    signer = CommandSigner(Ed25519PrivateKey.generate())
    gate = Gate(policy)
    request = GateRequest("prober", "r-1")
    sent = 0
    while gate.check(request, gate_now()).action != THROTTLE_ACTION:  # its whole burst
        sent += 1
        assert sent < 10_000
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_gate_streams(js, region)
        async with anyio.create_task_group() as tg:
            feed = await start_feed(tg, nats_url, region, gate, signer.verifier())
            with anyio.fail_after(5):
                await feed.ready.wait()
            # warned at L1 (the same rate tier as L0) while it probes
            await publish(js, signer, make_command(region, "prober", 1, 1, policy))
            await eventually(lambda: gate.held_version("prober") == 1)
            assert gate.check(request, gate_now()).action == THROTTLE_ACTION
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
