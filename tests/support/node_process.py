"""An actor node as a real child process (``python -m safeguards.regions.node_cli node``), so a
fault test or benchmark can SIGKILL it mid-batch. Shared by the single-server fault tests, the
cluster fault tests and ``benchmarks/cluster_faults.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import anyio


class NodeProcess:
    """One node process; its stdout (ready line, stats, final counters) and stderr (log) go to
    ``log_dir``. Every one started is remembered in ``started`` so a fixture can reap the ones a
    failed test left running (they would take CPU from every later test)."""

    started: ClassVar[list[NodeProcess]] = []

    def __init__(self, *, region: str, nats_url: str, database_url: str, node_id: str,
                 log_dir: Path, partitions: int, log_level: str = "WARNING",
                 stats_interval_s: float = 1.0, ack_delay_s: float = 0.0) -> None:
        self.node_id = node_id
        self.out = log_dir / f"{node_id}.out"
        self.err = log_dir / f"{node_id}.err"
        cmd = [sys.executable, "-m", "safeguards.regions.node_cli", "node", "--region", region,
               "--nats", nats_url, "--database-url", database_url, "--node-id", node_id,
               "--partitions", str(partitions), "--log-level", log_level,
               "--stats-interval", str(stats_interval_s)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if ack_delay_s:  # the node holds each ack this long: a kill lands mid-batch more often
            env["SAFEGUARDS_FAULT_ACK_DELAY_S"] = str(ack_delay_s)
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        NodeProcess.started.append(self)

    @classmethod
    def reap_started(cls) -> None:
        """SIGKILL every node process still running."""
        while cls.started:
            node = cls.started.pop()
            if node.proc.poll() is None:
                node.kill9()

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        with anyio.fail_after(timeout_s):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.node_id} exited: "
                                       f"{self.err.read_text()[-2000:]}")
                if self.out.exists() and '"ready": true' in self.out.read_text():
                    return
                await anyio.sleep(0.1)

    def last_stats(self) -> dict[str, int]:
        """The counters the process last printed (a killed one cannot print its final ones)."""
        stats: dict[str, int] = {}
        for line in self.out.read_text().splitlines():
            if line.startswith('{"stats"'):
                stats = json.loads(line)["stats"]
        return stats

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def _sigterm_and_wait(self, timeout_s: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(timeout_s):
            while True:
                if self.proc.poll() is not None:
                    break
                await anyio.sleep(0.1)

    async def terminate(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        await self._sigterm_and_wait(timeout_s)
        if self.proc.poll() is None:
            self.kill9()

    async def stop_cleanly(self, timeout_s: float = 30.0) -> dict[str, int]:
        """SIGTERM; the node must exit 0 within ``timeout_s``; returns its final counters."""
        await self._sigterm_and_wait(timeout_s)
        assert self.proc.poll() is not None, f"node {self.node_id} ignored SIGTERM"
        assert self.proc.returncode == 0, self.err.read_text()[-3000:]
        lines = [ln for ln in self.out.read_text().splitlines() if ln.startswith("{")]
        counters: dict[str, int] = json.loads(lines[-1])
        return counters
