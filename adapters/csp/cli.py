"""``safeguards proxy`` (the inline adapter's HTTP proxy), ``safeguards upstream`` (the model
stand-in) and ``safeguards extproc`` (the Envoy ext_proc server)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    proxy = sub.add_parser("proxy", help="run the Anthropic-compatible safeguards proxy")
    proxy.add_argument("--region", required=True)
    proxy.add_argument("--upstream", required=True, help="the model endpoint's base URL")
    proxy.add_argument("--nats", default="nats://127.0.0.1:4222", help="the region's NATS URL")
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--port", type=int, default=8080)
    proxy.add_argument("--account-header", default="x-csp-account-id")
    proxy.add_argument("--partitions", type=int, default=16)
    proxy.add_argument("--policy", type=Path, help="policy TOML (default: the shipped policy)")
    proxy.add_argument("--provision", action="store_true",
                       help="create the region's gate streams if they are missing")
    proxy.add_argument("--caller-auth", choices=("required", "loopback"), default="required",
                       help="required: every request carries the front door's signed caller "
                            "assertion; loopback: unsigned requests from this machine too")
    proxy.add_argument("--workers", type=int, default=1,
                       help="worker processes on the port (SO_REUSEPORT), sharing each "
                            "account's rate-limit quota")
    proxy.add_argument("--max-request-rate", type=float, default=1000.0,
                       help="signed requests a second the replay table (the workers' shared "
                            "one, or this process's) holds nonces for (24 bytes x 602 slots "
                            "each; past it, new assertions are refused as replay_table_full)")
    _nonce_ledger(proxy)
    _peers(proxy)
    proxy.set_defaults(handler=_proxy)

    upstream = sub.add_parser("upstream", help="run the scripted Messages API model stand-in")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, default=8081)
    upstream.set_defaults(handler=_upstream)

    extproc = sub.add_parser("extproc", help="run the Envoy ext_proc gRPC server")
    extproc.add_argument("--region", required=True)
    extproc.add_argument("--nats", default="nats://127.0.0.1:4222")
    extproc.add_argument("--listen", default="127.0.0.1:50051")
    extproc.add_argument("--account-header", default="x-csp-account-id")
    extproc.add_argument("--partitions", type=int, default=16)
    extproc.add_argument("--policy", type=Path)
    extproc.add_argument("--caller-auth", choices=("required", "loopback"), default="required",
                         help="required: each request carries the front door's signed caller "
                              "assertion; loopback: unsigned when Envoy calls from this machine")
    extproc.add_argument("--metrics-port", type=int, default=9464,
                         help="serve Prometheus metrics on this port (0: none)")
    _nonce_ledger(extproc)
    _peers(extproc)
    extproc.set_defaults(handler=_extproc)


def _nonce_ledger(parser: Any) -> None:
    parser.add_argument("--nonce-ledger", choices=("required", "local"), default=None,
                        help="the region's caller-assertion nonce ledger (NATS KV), taken after "
                             "this host's replay table: required (default; a ledger that does "
                             "not answer refuses the request with 503) or local (then this "
                             "host's table alone, counted and logged)")
    parser.add_argument("--nonce-ledger-deadline-ms", type=float, default=100.0,
                        help="how long a request waits for the ledger (a generating "
                             "request waits for it beside its upstream call)")


def _peers(parser: Any) -> None:
    parser.add_argument("--peer", action="append", default=[], metavar="REGION",
                        help="a region whose accounts this gate serves by their home's rules "
                             "(home routing, the cross-region board; repeatable)")


def _policy(path: Path | None) -> Any:
    from safeguards.core.policy import default_policy, parse_policy

    if path is None:
        return default_policy()
    return parse_policy(path.read_text("utf-8"), source=str(path))


def _run(main: Any, *args: Any) -> int:
    import anyio

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every upstream request at INFO: a line per request on the serving path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, *args, backend_options=options)
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from safeguards.adapters.csp.http_server import serve_proxy
    from safeguards.adapters.csp.proxy import ProxyConfig
    from safeguards.adapters.csp.shared_nonces import SharedNonces, slots_for

    config = ProxyConfig(region=args.region, upstream_url=args.upstream, nats_url=args.nats,
                         account_header=args.account_header, partitions=args.partitions,
                         provision_streams=args.provision, freeze_gc_after_sync=True,
                         caller_auth=args.caller_auth, peer_regions=tuple(args.peer),
                         nonce_ledger=args.nonce_ledger,
                         nonce_ledger_deadline_s=args.nonce_ledger_deadline_ms / 1000)
    if args.workers > 1:
        from safeguards.adapters.csp.workers import run_proxy_workers

        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return run_proxy_workers(config, _policy(args.policy), args.host, args.port,
                                 args.workers, args.max_request_rate)
    # one process: its own replay table, sized as the workers' shared one would be
    nonces = SharedNonces.in_process(slots_for(args.max_request_rate))
    return _run(functools.partial(serve_proxy, nonces=nonces), config, _policy(args.policy),
                args.host, args.port)


def _upstream(args: argparse.Namespace) -> int:
    from safeguards.adapters.csp.upstream import serve_upstream

    return _run(serve_upstream, args.host, args.port)


def _extproc(args: argparse.Namespace) -> int:
    from safeguards.adapters.csp.extproc import ExtProcConfig, serve_extproc

    config = ExtProcConfig(region=args.region, nats_url=args.nats, listen=args.listen,
                           account_header=args.account_header, partitions=args.partitions,
                           metrics_port=args.metrics_port, caller_auth=args.caller_auth,
                           peer_regions=tuple(args.peer), nonce_ledger=args.nonce_ledger,
                           nonce_ledger_deadline_s=args.nonce_ledger_deadline_ms / 1000)
    return _run(serve_extproc, config, _policy(args.policy))
