from __future__ import annotations

import socket
import threading
import time
from collections import deque

_HANDED_OUT: deque[int] = deque(maxlen=4096)  # ports this process was given, newest last
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out; the caller binds it soon after (and retries if beaten).

    Nothing holds a port between here and its bind, so the kernel may hand the same one out
    again meanwhile: a cluster picks its client, route, proxy and advertised ports before any
    server binds one, and two of them were once the same (a server then exits at start-up).
    A port this process was given recently is therefore never given again."""
    with _HANDED_OUT_LOCK:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _HANDED_OUT:
                break
        _HANDED_OUT.append(port)
        return port


def wait_for_port(host: str, port: int, timeout_s: float, alive: object = None) -> None:
    """Block until something accepts on ``host:port`` or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"server for port {port} exited during start-up")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout_s}s")
