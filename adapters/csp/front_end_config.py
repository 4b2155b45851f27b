"""The settings both front ends share (the HTTP proxy's ``ProxyConfig`` and ext_proc's
``ExtProcConfig``): the region, the bus, the caller's identity, telemetry and the enforcement
feed. The inline gate runtime (``inline_gate``) reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from safeguards.adapters.csp.caller_auth import CallerKey


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontEndConfig:
    region: str
    nats_url: str | None = None
    account_header: str = "x-csp-account-id"
    link_key: bytes | None = None  # the region's API-key fingerprint key (None: load_link_key)
    max_body_bytes: int = 8 * 1024 * 1024
    partitions: int = 16
    classify_all_streams: bool = False
    telemetry_capacity: int = 10_000
    telemetry_workers: int = 1
    telemetry_linger_s: float = 0.005  # how long a telemetry batch waits to fill
    publish_timeout_s: float = 2.0
    feed_heartbeat_s: float = 1.0
    feed_cleanup_timeout_s: float = 2.0  # EnforcementFeed.cleanup_timeout_s
    freeze_gc_after_sync: bool = False  # a server process: move the loaded cache out of GC scans
    # Caller authentication: "required" (every request signed by the front door) or "loopback"
    # (unsigned requests from this machine too; for ext_proc, where Envoy sends the
    # ``source.address`` attribute, when the downstream client itself is on this machine);
    # keys: load_caller_keys.
    caller_auth: str = "required"
    caller_keys: tuple[CallerKey, ...] | None = None
    # The region's nonce ledger (``nonce_ledger``), after the host's replay table: "required"
    # (a ledger that does not answer within the deadline: 503) or "local" (then the host's
    # table alone); None: "required" with a NATS URL, no ledger without one.
    nonce_ledger: str | None = None
    # 100 ms: at 64 clients on 2 cores the gate's own event loop lagged 15-40 ms (p99) and a
    # 25 ms deadline refused signed requests with 503 (2 of 4 benchmark runs); a generating
    # request waits for the ledger beside its upstream call, so the deadline costs it nothing
    nonce_ledger_deadline_s: float = 0.1
    # the other regions whose accounts it serves by their home's rules (``csp.homes``) and whose
    # cross-region board entries it takes (``bus.cross_signals``)
    peer_regions: tuple[str, ...] = ()
