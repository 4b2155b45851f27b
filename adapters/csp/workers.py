"""The HTTP proxy on several cores: N worker processes on one port (``SO_REUSEPORT``).

Python serves one request at a time per process, so the proxy scales across cores with
processes. Each worker binds its own listening socket to the same address with
``SO_REUSEPORT`` and the kernel spreads new connections over them. Each worker is a whole gate
(``InlineGate``): its own NATS link, its own enforcement feed (every worker reads the region's
whole enforcement stream, so an enforcement command reaches all of them), its own telemetry
and classify client. What they share, in shared-memory tables made here, is the accounts'
rate-limit quota (``shared_rates``, so that N workers never serve N times an account's rate) and
the caller assertions' nonces (``shared_nonces``, so that an assertion captured once is not
taken once by each worker; sized for ``max_request_rate`` signed requests a second); after it,
each worker takes a nonce in the region's ledger over its own link (``nonce_ledger``). Their
metrics are merged: a directory made here for the run (removed at stop) holds each worker's
metric files, and any worker's ``/metrics`` answers for all of them (``worker_metrics``).

The parent only supervises: it starts the workers (spawned, not forked: no event loop or NATS
connection is copied), and when one exits it stops the others and exits with a failure, so a
supervisor above (systemd, Kubernetes) restarts the whole proxy rather than this process
hiding a dead worker. SIGTERM and SIGINT stop every worker.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import tempfile
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any

from safeguards.adapters.csp.proxy import ProxyConfig
from safeguards.adapters.csp.shared_nonces import (
    DEFAULT_MAX_RATE,
    Handle,
    SharedNonces,
    slots_for,
    table_bytes,
)
from safeguards.adapters.csp.shared_rates import SharedRates
from safeguards.adapters.csp.worker_metrics import exported_to_children
from safeguards.core.policy import Policy

log = logging.getLogger(__name__)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _worker(config: ProxyConfig, policy: Policy, host: str, port: int,
            rates_handle: tuple[str, list[Any]], nonces_handle: Handle, index: int) -> None:
    import anyio

    from safeguards.adapters import tracing
    from safeguards.adapters.csp.http_server import serve_proxy

    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sock = reuse_port_socket(host, port)
    rates = SharedRates.attach(rates_handle)
    nonces = SharedNonces.attach(nonces_handle)
    traces = tracing.provider_from_environment("safeguards-proxy")  # None: tracing off
    tracing.install(traces)
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(_serve, serve_proxy, config, policy, host, port, sock, rates, nonces,
                      backend_options=options)
    finally:
        sock.close()
        rates.close()
        nonces.close()
        if traces is not None:
            traces.shutdown()  # exports the last spans


async def _serve(serve: Any, config: ProxyConfig, policy: Policy, host: str, port: int,
                 sock: socket.socket, rates: SharedRates, nonces: SharedNonces) -> None:
    await serve(config, policy, host, port, sockets=[sock], rates=rates, nonces=nonces)


def run_proxy_workers(config: ProxyConfig, policy: Policy, host: str, port: int,
                      workers: int, max_request_rate: float = DEFAULT_MAX_RATE) -> int:
    """Serve the proxy from ``workers`` processes until one exits or a signal stops them."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    slots = slots_for(max_request_rate)
    rates, nonces = SharedRates.create(), SharedNonces.create(slots)
    log.info("replay table: %d slots (%.1f MB) for %g signed requests/s", slots,
             table_bytes(slots) / 1e6, max_request_rate)
    metrics_dir = tempfile.mkdtemp(prefix="safeguards-proxy-metrics-")
    context = get_context("spawn")
    processes = [context.Process(target=_worker, name=f"safeguards-proxy-{i}", daemon=False,
                                 args=(config, policy, host, port, rates.handle(),
                                       nonces.handle(), i))
                 for i in range(workers)]
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                process.terminate()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with exported_to_children(metrics_dir):
            for process in processes:
                process.start()
        log.info("proxy on %s:%d with %d worker processes", host, port, workers)
        wait([p.sentinel for p in processes])  # the first to exit ends them all
        if not stopping:
            failed = [p.name for p in processes if p.exitcode is not None]
            log.error("proxy worker %s exited; stopping the others", ", ".join(failed))
        stop(signal.SIGTERM, None)
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        return 0 if stopping and all(p.exitcode in (0, -signal.SIGTERM) for p in processes) \
            else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rates.close()
        nonces.close()
        _remove(metrics_dir)


def _remove(directory: str) -> None:
    try:
        shutil.rmtree(directory)
    except OSError:
        log.exception("could not remove the workers' metrics directory %s", directory)
