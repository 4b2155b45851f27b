"""The inline gate runtime both front ends share (the HTTP proxy and Envoy ext_proc).

One place wires what a front end needs around the gate: the background NATS link, the region's
policy follower, the enforcement feed, telemetry, the synchronous classify client, the metrics,
the caller's identity headers, caller authentication (with the region's nonce ledger over the
same link, ``nonce_ledger``) and admission. ``running()`` owns their background tasks; the
front ends add only their own protocol (ASGI routes, the gRPC servicer).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from nats.aio.client import Client as NATS

from safeguards.adapters.bus.cross_signals import CrossSignalBoard, load_cross_secret
from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
from safeguards.adapters.bus.producer_auth import load_forwarding_keys, load_producer_keys
from safeguards.adapters.bus.signing import load_verifier
from safeguards.adapters.classifier.first_stage import first_stage_or_none
from safeguards.adapters.csp.admission import Admission
from safeguards.adapters.csp.batch_ledger import BatchRecords
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.caller_auth import CallerAuth, load_caller_keys
from safeguards.adapters.csp.classify import SyncClassifier
from safeguards.adapters.csp.feed import EnforcementFeed, freeze_gc_when_ready
from safeguards.adapters.csp.feed_snapshot import FeedSnapshot
from safeguards.adapters.csp.front_end_config import FrontEndConfig
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.homes import HomeRouting
from safeguards.adapters.csp.identity import IdentityHeaders, load_link_key, peer_link_key
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.nonce_ledger import RegionLedger, ledger_mode
from safeguards.adapters.csp.streams import ensure_gate_streams
from safeguards.adapters.csp.telemetry import Telemetry
from safeguards.adapters.keyfiles import state_dir
from safeguards.core.ids import validate_region
from safeguards.core.policy import Policy

log = logging.getLogger(__name__)


class InlineGate:
    def __init__(self, policy: Policy, config: FrontEndConfig, *, connection_name: str,
                 provision_streams: bool = False, peers: tuple[str, ...] = ()) -> None:
        """``peers``: the regions whose accounts this gate may serve by their home's rules
        (``csp.homes``); none: every account is served as this region's."""
        region = self.region = validate_region(config.region)
        self.provision_streams = provision_streams
        self.freeze_gc_after_sync = config.freeze_gc_after_sync
        self.gate = Gate(policy)
        self.link = (BusLink(config.nats_url, name=connection_name,
                             identity=nats_identity(region, NatsRole.GATE))
                     if config.nats_url else None)
        self.feed = None
        if self.link is not None:
            verifier = load_verifier(region)
            snapshot = FeedSnapshot(state_dir() / f"enforce-cache-{region}.snapshot", region,
                                    verifier)
            self.feed = EnforcementFeed(self.link, region, self.gate, verifier,
                                        heartbeat_s=config.feed_heartbeat_s, snapshot=snapshot,
                                        cleanup_timeout_s=config.feed_cleanup_timeout_s)
            self.gate.synced = self._restore(snapshot, self.feed)
        producer = load_producer_keys(region)  # signs and seals what the gate publishes
        self.telemetry = Telemetry(self.link, region, config.partitions,
                                   capacity=config.telemetry_capacity,
                                   workers=config.telemetry_workers,
                                   publish_timeout_s=config.publish_timeout_s,
                                   linger_s=config.telemetry_linger_s, producer=producer)
        self.classifier = SyncClassifier(self.link, region, policy.gate.classify_deadline_ms,
                                         producer)
        self.metrics = CspMetrics(self.gate, self.telemetry, self.feed)
        self.identity = IdentityHeaders(config.link_key or load_link_key(region),
                                        config.account_header)
        mode = ledger_mode(config.nonce_ledger, config.nats_url)
        self.nonce_ledger = (RegionLedger(region, self._nats, mode=mode,
                                          deadline_s=config.nonce_ledger_deadline_s,
                                          on_unavailable=self.metrics.count_ledger_unavailable)
                             if mode is not None and self.link is not None else None)
        # the region's batch ledger (csp.batch_ledger), over the same link
        self.batch_records = (BatchRecords(region, self._nats, producer,
                                           on_error=self.metrics.count_batch_ledger_error)
                              if self.link is not None else None)
        caller_keys = config.caller_keys or tuple(load_caller_keys(region))
        self.caller_auth = CallerAuth(list(caller_keys), config.caller_auth, config.account_header,
                                      on_refused=self.metrics.count_caller_refused,
                                      ledger=self.nonce_ledger)
        self.admission = Admission(self.gate, self.classifier, self.telemetry, self.metrics,
                                   first_stage_or_none(
                                       "every screened prompt goes to the classifier"),
                                   synced=self.feed.ready if self.feed is not None else None,
                                   link_key=self.identity.link_key)
        self.homes = None
        self.cross: CrossSignalBoard | None = None
        peers = tuple(p for p in peers if p != region)
        if self.link is not None and peers:
            keys = {p: k for p in peers if (k := peer_link_key(p)) is not None}
            self.homes = HomeRouting(self.link, region, config.partitions, peers, self.gate,
                                     link_keys=keys)
            self.admission.homes = self.homes
            self.telemetry.homes = self.homes.foreign_home
            self.telemetry.forwarders = {p: load_forwarding_keys(region, p) for p in peers}
            link = self.link
            self.cross = CrossSignalBoard(
                lambda: link.js, region, load_cross_secret(),
                origins={p: load_forwarding_keys(p, region) for p in peers})
            self.admission.cross = self.cross

    def _nats(self) -> NATS | None:
        """The link's connection now (the nonce ledger's; None: none yet)."""
        return self.link.nc if self.link is not None else None

    def _restore(self, snapshot: FeedSnapshot, feed: EnforcementFeed) -> bool:
        """Fail-closed start: the gate serves before its feed has read the stream only when a
        verified snapshot of the last synced state is on local disk (a restart during a NATS
        outage keeps enforcing what it last knew; staleness rules apply from there)."""
        commands = snapshot.load()
        if commands is None:
            return False
        for command in commands:
            self.gate.apply(command)
        feed.restored = {c.account_id for c in commands}
        log.warning("gate for %s: enforcement restored from %s (%d accounts) until the stream "
                    "is read", self.region, snapshot.path, len(commands))
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[InlineGate]:
        # Two task groups: everything that talks over the link stops (and cleans up, e.g. the
        # feed deletes its consumer) before the link closes the connection. Cancelled together,
        # the close raced those requests: left unanswered, each stop sat out the feed's timeout.
        async with anyio.create_task_group() as link_tg:
            if self.link is not None:
                await link_tg.start(self.link.run)
            async with anyio.create_task_group() as tg:
                if self.link is not None:
                    tg.start_soon(self.link.follow_policy, self.region, self.gate)
                    if self.provision_streams:
                        tg.start_soon(self._provision)
                if self.feed is not None:
                    await tg.start(self.feed.run)
                    tg.start_soon(self.feed.persist)
                    if self.freeze_gc_after_sync:
                        tg.start_soon(freeze_gc_when_ready, self.feed)
                await tg.start(self.telemetry.run)
                if self.homes is not None:
                    await tg.start(self.homes.run)
                if self.cross is not None:
                    await tg.start(self.cross.run)
                if self.metrics.shared is not None:
                    tg.start_soon(self.metrics.shared.keep_published)
                yield self
                tg.cancel_scope.cancel()
            link_tg.cancel_scope.cancel()

    async def _provision(self) -> None:
        assert self.link is not None
        await self.link.connected.wait()
        js = self.link.js
        if js is not None:
            with anyio.fail_after(10):
                await ensure_gate_streams(js, self.region)
