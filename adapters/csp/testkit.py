"""Test support for the inline adapter: a region handle that publishes enforcement commands and
answers synchronous classification with a scripted scorer over real NATS (the ClassifyRequest /
ClassifyReply contract), for tests, benchmarks and demos that run without the classifier adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from safeguards.adapters.csp.proxy import CspProxy
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.core.codec import decode_record, encode_command, encode_record
from safeguards.core.content import ClassifyReply, ClassifyRequest
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import Scores
from safeguards.core.policy import Policy
from safeguards.core.subjects import classify_subject, enforce_subject

Scorer = Callable[[ClassifyRequest], Scores]


def default_scorer(request: ClassifyRequest) -> Scores:
    """Prompts mentioning EXPLOIT score high on cyber; completions score violence by length."""
    if request.kind == "prompt":
        cyber = 0.95 if "EXPLOIT" in request.text else 0.05
        return (("cyber", cyber), ("weapons", 0.01), ("violence", 0.02))
    return (("violence", min(1.0, len(request.text) / 1000)), ("weapons", 0.01))


@dataclass
class Region:
    name: str
    nc: NATS
    policy: Policy

    async def enforce(self, account: str, level: int, version: int,
                      expires_at: datetime | None = None) -> EnforcementCommand:
        tier = self.policy.rate_tiers[level]
        command = EnforcementCommand(
            command_id=f"{account}-{version}", account_id=account, region=self.name,
            level=level, requests_per_minute=tier.requests_per_minute,
            tokens_per_minute=tier.tokens_per_minute,
            interventions=self.policy.ladder[level].interventions, expires_at=expires_at,
            version=version, policy_version=self.policy.version, reason="test",
            issued_at=datetime.now(UTC),
        )
        js = self.nc.jetstream()
        await js.publish(enforce_subject(self.name, account), encode_command(command))
        return command

    async def classifier(self, scorer: Scorer = default_scorer,
                         delay_s: float = 0.0) -> Callable[[], Awaitable[None]]:
        """Answer synchronous classification for this region; returns the unsubscribe."""

        async def answer(msg: Msg) -> None:
            request = decode_record(msg.data, ClassifyRequest)
            if delay_s:
                await anyio.sleep(delay_s)
            reply = ClassifyReply(request_id=request.request_id, model_name="test-scorer",
                                  model_version="1", scores=scorer(request))
            await msg.respond(encode_record(reply))

        sub = await self.nc.subscribe(classify_subject(self.name), cb=answer)
        await self.nc.flush()

        async def unsubscribe() -> None:
            await sub.unsubscribe()
            await self.nc.flush()  # the server has dropped our interest once this returns

        return unsubscribe


@dataclass
class RunningProxy:
    proxy: CspProxy
    url: str
    upstream: UpstreamApp


async def eventually(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (polling: the things it watches have no events)."""
    with anyio.fail_after(within_s):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.02)
