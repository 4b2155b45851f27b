"""Test support for the inline adapter: a region handle that publishes enforcement commands over
real NATS, signed with the region's key (as the region's relay does), the running-proxy handle
and a polling wait. Synchronous classification in tests comes from the real classifier adapter."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic
import anyio
from nats.aio.client import Client as NATS

from safeguards.adapters.bus.signing import load_signer
from safeguards.adapters.csp.proxy import CspProxy
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.core.codec import encode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.policy import Policy
from safeguards.core.subjects import enforce_subject


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
        subject, payload = enforce_subject(self.name, account), encode_command(command)
        await self.nc.jetstream().publish(subject, payload,
                                          headers=load_signer(self.name).headers(subject, payload))
        return command


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


def sdk_http() -> Any:
    """The HTTP library the installed ``anthropic`` SDK is built on (httpx, or httpx2 in newer
    releases): its client is what the SDK takes as ``http_client``."""
    annotation = str(inspect.signature(anthropic.AsyncAnthropic).parameters["http_client"]
                     .annotation)
    return importlib.import_module("httpx2" if "httpx2" in annotation else "httpx")


async def action_for(proxy: RunningProxy, account: str, text: str,
                     model: str = "claude-test-1") -> str:
    """What the proxy did with one user message from ``account`` (its
    ``x-safeguards-action``), sent with the official SDK."""
    sdk = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="sk-test", max_retries=0,
                                   default_headers={"x-csp-account-id": account})
    raw = await sdk.messages.with_raw_response.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": text}])
    return raw.headers["x-safeguards-action"]
