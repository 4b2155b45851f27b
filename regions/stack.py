"""The whole service of one region in this process, and the embedded default around it.

A :class:`RegionStack` runs, for one region: its account-actor nodes (two by default, splitting
the partitions by lease), the classifier adapter (content consumer and synchronous classify
responder) and the inline proxy. :func:`running_stack` starts the region stacks and the model
stand-in (the provider's model: the only thing here that is not ours) and yields the endpoints.
It is what ``safeguards run`` serves and what the end-to-end simulation test drives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from anyio.streams.text import TextReceiveStream

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.cross_signals import (
    CrossSignalPublisher,
    load_cross_secret,
    refuse_thresholds,
)
from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
from safeguards.adapters.bus.producer_auth import load_forwarding_keys, load_producer_keys
from safeguards.adapters.classifier.first_stage import first_stage_or_none
from safeguards.adapters.classifier.intake import ContentTriage, evidence_thresholds
from safeguards.adapters.classifier.loader import load_model
from safeguards.adapters.classifier.nats_service import ClassifierService, ClassifierSettings
from safeguards.adapters.classifier.scorer import ScoreResult
from safeguards.adapters.classifier.scorer_pair import stream_and_inline_scorers
from safeguards.adapters.csp.caller_auth import load_caller_keys
from safeguards.adapters.csp.identity import load_link_key, peer_link_key
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded.ports import free_port
from safeguards.adapters.keyfiles import state_dir
from safeguards.adapters.store import PostgresEventStore
from safeguards.core.content import ContentItem
from safeguards.core.policy import Policy, default_policy
from safeguards.regions.config import RegionConfig
from safeguards.regions.nodes import RegionNodes

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


@dataclass(slots=True)
class RegionEndpoints:
    region: str
    proxy_url: str
    database_url: str
    nats_url: str
    classifier: str  # model name, version and execution provider


@dataclass(slots=True)
class StackEndpoints:
    upstream_url: str
    regions: dict[str, RegionEndpoints] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"  model stand-in      {self.upstream_url}  (the provider's model, scripted)"]
        for r in self.regions.values():
            lines += [
                f"  region {r.region}",
                f"    inline proxy      {r.proxy_url}/v1/messages",
                f"    proxy metrics     {r.proxy_url}/metrics",
                f"    PostgreSQL        {r.database_url}",
                f"    NATS (JetStream)  {r.nats_url}",
                f"    classifier        {r.classifier}",
                "    account actors    2 nodes",
                f"    caller key        {load_caller_keys(r.region)[0].key_id} in "
                f"{state_dir() / f'caller-{r.region}.keys'} (unsigned callers: 127.0.0.1 only)",
            ]
        lines += ["  a caller elsewhere signs each request as the provider's front door would:",
                  "    from safeguards.adapters.csp.caller_auth import SignedCaller, "
                  "load_caller_keys",
                  "    anthropic.Anthropic(base_url=PROXY, api_key='k', http_client=httpx2."
                  "Client(auth=SignedCaller(load_caller_keys(REGION)[0], 'acct-1')))"]
        return "\n".join(lines)


class RegionClassifier(ClassifierService):
    """The region's classifier as the stack runs it (given the region's link key, so every score
    names its content by ``content_digest``, never by a plain SHA-256), which also counts the
    prompts it flags for the cross-region board (``bus.cross_signals``), where a failure is
    counted and never holds up a score."""

    cross: CrossSignalPublisher | None = None

    async def _publish(self, item: ContentItem, aggregates: tuple[str, ...],
                       result: ScoreResult, shadow: bool) -> None:
        await super()._publish(item, aggregates, result, shadow)
        if self.cross is not None and not shadow:
            await self.cross.observe(item, result.scores)


class RegionStack:
    def __init__(self, config: RegionConfig, upstream_url: str, *, policy: Policy | None = None,
                 proxy_port: int | None = None, nodes: int = 2) -> None:
        self.config = config
        self.upstream_url = upstream_url
        self.policy = policy or default_policy()
        self.proxy_port = proxy_port or free_port()
        # the nodes start on the same policy as the gate; the region's policy board, once it
        # holds a change, moves them all together
        self.nodes = RegionNodes(config, count=nodes, policy=self.policy)
        self.proxy: CspProxy | None = None
        self.classifier: ClassifierService | None = None
        self.endpoints: RegionEndpoints | None = None
        self._stop = anyio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[RegionEndpoints] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        cfg = self.config
        async with anyio.create_task_group() as tg:
            # Nodes first: they migrate the region's store and provision its streams.
            await tg.start(self.nodes.run)
            model = await anyio.to_thread.run_sync(load_model)
            nc = await connect(cfg.nats_url, name=f"safeguards-classifier-{cfg.name}",
                               identity=nats_identity(cfg.name, NatsRole.CLASSIFIER))
            # which content the stream scores first; kept across restarts of the classifier
            triage = ContentTriage(evidence_thresholds(self.policy), first_stage_or_none(
                "the content triage goes by accounts alone"))
            try:
                scorer, inline = stream_and_inline_scorers(model)
                async with scorer, inline:
                    def classifier() -> ClassifierService:  # again after a crash
                        forwarders = {p: load_forwarding_keys(cfg.name, p) for p in cfg.peers}
                        link_key = load_link_key(cfg.name)
                        self.classifier = RegionClassifier(
                            nc, cfg.name, scorer, ClassifierSettings(partitions=cfg.partitions),
                            inline=inline, producer=load_producer_keys(cfg.name),
                            forwarders=forwarders, link_key=link_key, triage=triage,
                            home_link_keys={p: k for p in cfg.peers
                                            if (k := peer_link_key(p)) is not None})
                        if cfg.peers:  # other regions to tell (core.cross_signals)
                            self.classifier.cross = CrossSignalPublisher(
                                nc.jetstream(), cfg.name, load_cross_secret(), link_key,
                                signers=forwarders, thresholds=refuse_thresholds(self.policy))
                        return self.classifier

                    async with anyio.create_task_group() as classifier_tg:
                        await classifier_tg.start(functools.partial(
                            self.nodes.supervisor.keep_running, "classifier", classifier))
                        proxy = CspProxy(ProxyConfig(region=cfg.name,
                                                     upstream_url=self.upstream_url,
                                                     nats_url=cfg.nats_url,
                                                     partitions=cfg.partitions,
                                                     # listens on 127.0.0.1 only
                                                     caller_auth="loopback",
                                                     peer_regions=cfg.peers), self.policy)
                        self.proxy = proxy
                        async with proxy.running(), serving(proxy, HOST, self.proxy_port,
                                                            lifespan="off") as url:
                            self.endpoints = RegionEndpoints(
                                cfg.name, url, cfg.database_url, cfg.nats_url,
                                f"{model.manifest.name} {model.manifest.version} "
                                f"on {model.provider}")
                            task_status.started(self.endpoints)
                            await self._stop.wait()
                        # The proxy has stopped taking requests and flushed its telemetry; the
                        # classifier's unacked content stays in its stream for the next start.
                        classifier_tg.cancel_scope.cancel()
            finally:
                with anyio.move_on_after(5, shield=True):
                    await nc.drain()
                # The nodes drain last: batches in hand commit and are acked, leases released.
                self.nodes.request_stop()


@contextlib.asynccontextmanager
async def region_process(config: RegionConfig, upstream_url: str, *,
                         policy_path: str | None = None,
                         ready_timeout_s: float = 120.0) -> AsyncIterator[RegionEndpoints]:
    """One region's stack in a child process (``safeguards region``): each region gets its own
    interpreter and event loop, as it would on its own machine. Yields its endpoints once it
    serves; on exit sends SIGTERM (drain) and waits, killing it only if it will not stop."""
    cmd = [sys.executable, "-m", "safeguards.regions", "region", "--region", config.name,
           "--nats", config.nats_url, "--database-url", config.database_url,
           "--upstream", upstream_url, "--partitions", str(config.partitions)]
    for peer in config.peers:
        cmd += ["--peer", peer]
    if policy_path:
        cmd += ["--policy", policy_path]
    process = await anyio.open_process(cmd, stdout=subprocess.PIPE, stderr=None)
    try:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        buffer = ""
        with anyio.fail_after(ready_timeout_s):
            while "\n" not in buffer:
                try:
                    buffer += await lines.receive()
                except anyio.EndOfStream:
                    raise RuntimeError(f"region {config.name} exited before it was ready "
                                       f"(exit code {await process.wait()})") from None
        ready = json.loads(buffer.splitlines()[0])
        yield RegionEndpoints(ready["region"], ready["proxy_url"], ready["database_url"],
                              ready["nats_url"], ready["classifier"])
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(60):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await process.aclose()


def with_peers(configs: list[RegionConfig]) -> list[RegionConfig]:
    """Each configuration without peers given the other regions on the same NATS as peers
    (home routing reaches a peer's subjects over the serving region's own connection)."""
    return [cfg if cfg.peers else dataclasses.replace(cfg, peers=tuple(
        other.name for other in configs
        if other.name != cfg.name and other.nats_url == cfg.nats_url)) for cfg in configs]


@contextlib.asynccontextmanager
async def running_stack(configs: list[RegionConfig], *, policy_path: str | None = None,
                        upstream_port: int | None = None,
                        home_routing: bool = True) -> AsyncIterator[StackEndpoints]:
    """Start the model stand-in here and every region's stack in its own process; stop them all
    (regions drain first) when the block exits. Regions on one NATS serve each other's
    accounts by their home's rules (``core.homes``) unless their configurations say otherwise
    (``peers``) or ``home_routing`` is False."""
    if home_routing:
        configs = with_peers(configs)
    upstream = UpstreamApp()
    async with serving(upstream, HOST, upstream_port or free_port(), lifespan="off") as up_url:
        endpoints = StackEndpoints(up_url)
        async with contextlib.AsyncExitStack() as regions:
            # Started one after the other: each migrates its own database, and two classifier
            # models loading at once only slow each other down on a small machine.
            for cfg in configs:
                endpoints.regions[cfg.name] = await regions.enter_async_context(
                    region_process(cfg, up_url, policy_path=policy_path))
            yield endpoints


@contextlib.asynccontextmanager
async def region_stores(endpoints: StackEndpoints) -> AsyncIterator[dict[str, PostgresEventStore]]:
    """Read access to each region's store (simulations score from them)."""
    async with contextlib.AsyncExitStack() as stack:
        stores = {}
        for r in endpoints.regions.values():
            stores[r.region] = await stack.enter_async_context(
                PostgresEventStore(r.region, r.database_url))
        yield stores
