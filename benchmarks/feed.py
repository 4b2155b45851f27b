"""Enforcement feed benchmark: how long a fresh gate takes to load 100,000 accounts' commands.

    python benchmarks/feed.py [--accounts 100000] [--nats URL]

Publishes one command per account to a fresh region's ENFORCE stream (embedded NATS unless
``--nats``), then starts a gate with its feed and times until the initial state is read
(``feed.ready``). The last line is JSON: ``{"accounts", "initial_sync_s", "resyncs"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from safeguards.adapters.bus.signing import CommandSigner
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.feed import EnforcementFeed
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.embedded import EmbeddedNats
from safeguards.core.codec import encode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import default_policy
from safeguards.core.subjects import enforce_subject


async def run(url: str, accounts: int) -> dict[str, Any]:
    region = "b" + secrets.token_hex(4)
    policy = default_policy()
    signer = CommandSigner(Ed25519PrivateKey.generate())  # as the region's relay signs
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_gate_streams(js, region)
        issued = datetime.now(UTC)
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for i in range(accounts):
            level = i % 5
            tier = policy.rate_tiers[level]
            command = EnforcementCommand(
                command_id=str(i), account_id=f"acct-{i}", region=region, level=level,
                requests_per_minute=tier.requests_per_minute,
                tokens_per_minute=tier.tokens_per_minute,
                interventions=policy.ladder[level].interventions, expires_at=None, version=1,
                policy_version=policy.version, reason="bench", issued_at=issued)
            subject, payload = enforce_subject(region, f"acct-{i}"), encode_command(command)
            pending.append(await js.publish_async(subject, payload,
                                                  headers=signer.headers(subject, payload)))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        print(f"published {accounts} commands in {time.perf_counter() - started:.1f}s")
    finally:
        await nc.close()
    gate = Gate(policy)
    link = BusLink(url)
    feed = EnforcementFeed(link, region, gate, signer.verifier())  # verifies every command
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        await link.connected.wait()
        started = time.perf_counter()
        await tg.start(feed.run)
        with anyio.fail_after(300):
            await feed.ready.wait()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    print(f"feed initial sync: {gate.size} accounts in {elapsed:.2f}s")
    return {"accounts": gate.size, "initial_sync_s": round(elapsed, 2), "resyncs": feed.resyncs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--nats", default=None)
    args = parser.parse_args()
    if args.nats:
        result = anyio.run(run, args.nats, args.accounts)
    else:
        with EmbeddedNats() as server:
            result = anyio.run(run, server.url, args.accounts)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
