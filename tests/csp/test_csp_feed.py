"""The enforcement feed against a real JetStream: initial state, live updates, heartbeats."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import anyio
import nats
from csp_testkit import eventually

from safeguards.adapters.csp.feed import EnforcementFeed
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.link import BusLink
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


async def test_feed_reads_last_values_then_live_updates(nats_url: str) -> None:
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_gate_streams(js, region)
        await ensure_gate_streams(js, region)  # idempotent
        for account, level, version in [("a.1", 1, 1), ("a.1", 4, 2), ("b*2", 2, 7),
                                        ("c/3", 3, 1)]:
            cmd = make_command(region, account, level, version, policy)
            await js.publish(enforce_subject(region, account), encode_command(cmd))
        await nc.publish(enforce_subject(region, "junk"), b"\x93not a command")
        await nc.flush()

        gate = Gate(policy)
        link = BusLink(nats_url)
        feed = EnforcementFeed(link, region, gate, heartbeat_s=0.2)
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            await tg.start(feed.run)
            with anyio.fail_after(5):
                await feed.ready.wait()
            await eventually(lambda: gate.size == 3)
            now = time.time()
            assert gate.held_version("a.1") == 2 and gate.level_of("a.1", now) == 4
            assert gate.level_of("b*2", now) == 2 and gate.level_of("c/3", now) == 3
            await eventually(lambda: feed.rejected == 1)  # the undecodable one: counted, logged
            # live: a newer command applies, an older one does not
            await js.publish(enforce_subject(region, "a.1"),
                             encode_command(make_command(region, "a.1", 0, 3, policy)))
            await eventually(lambda: gate.held_version("a.1") == 3)
            await js.publish(enforce_subject(region, "b*2"),
                             encode_command(make_command(region, "b*2", 0, 5, policy)))
            await js.publish(enforce_subject(region, "d"),
                             encode_command(make_command(region, "d", 1, 1, policy)))
            await eventually(lambda: gate.held_version("d") == 1)
            assert gate.held_version("b*2") == 7 and gate.commands_ignored >= 1
            # a command of another region on this region's stream is refused, and counted
            other = make_command("zz", "e", 4, 1, policy)
            await js.publish(enforce_subject(region, "e"), encode_command(other))
            await eventually(lambda: feed.rejected == 2)
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

    def apply(self, command: EnforcementCommand, now: float | None = None) -> bool:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("a bug while applying")
        return super().apply(command, now)


async def test_a_failure_while_handling_a_command_is_counted_and_the_stream_re_read(
        nats_url: str) -> None:
    region = "t" + secrets.token_hex(4)
    policy = default_policy()
    command = make_command(region, "acct", 4, 1, policy)
    async with await nats.connect(nats_url) as nc:
        await ensure_gate_streams(nc.jetstream(), region)
        await nc.jetstream().publish(enforce_subject(region, "acct"), encode_command(command))
    gate = _FlakyGate(policy)
    link = BusLink(nats_url)
    feed = EnforcementFeed(link, region, gate, heartbeat_s=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        await tg.start(feed.run)
        # the first delivery fails inside the callback; the next session applies it
        await eventually(lambda: gate.held_version("acct") == 1, 5)
        assert feed.callback_failures == 1 and feed.sessions >= 2
        tg.cancel_scope.cancel()
