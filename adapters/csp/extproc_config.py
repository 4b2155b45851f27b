"""The ext_proc server's settings (``extproc``)."""

from __future__ import annotations

from dataclasses import dataclass

from safeguards.adapters.csp.front_end_config import FrontEndConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtProcConfig(FrontEndConfig):
    listen: str = "127.0.0.1:50051"
    metrics_port: int = 0  # a Prometheus /metrics endpoint on this port (0: none)
    job_outputs_drain_s: float = 5.0  # a shutdown's wait for jobs' outputs being observed
