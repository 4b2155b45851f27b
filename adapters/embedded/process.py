"""What the embedded servers share: a data directory, a child process and its stop/kill."""

from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


class ServerProcess(abc.ABC):
    """A server in a child process of its own session, so a Ctrl-C meant for ``safeguards run``
    does not reach it before the service has drained through it; ``stop`` ends it afterwards.

    Subclasses set ``stop_signal`` (the server's graceful shutdown) and implement ``start``.
    """

    stop_signal = signal.SIGTERM
    tmp_prefix = "sg-server-"

    def __init__(self, data_dir: Path | None) -> None:
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix=self.tmp_prefix)
            data_dir = Path(self._tmp)
        self.root = data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the server and return once it accepts connections."""

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful shutdown, then SIGKILL if the server will not go within ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole session, for fault tests: no chance to flush or say goodbye."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
