"""Serve an ASGI app with uvicorn inside the caller's task group (tests, benchmarks, CLI)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn


@contextlib.asynccontextmanager
async def serving(app: Any, host: str, port: int, *, lifespan: str = "on",
                  startup_timeout_s: float = 20.0, **options: Any) -> AsyncIterator[str]:
    """Run ``app`` on ``host:port`` until the block exits; yields its base URL. ``options`` go to
    ``uvicorn.Config`` (for example ``timeout_keep_alive``)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan=lifespan, loop="none", **options)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    # Signals belong to whoever runs the event loop (the CLI, pytest), not to this server.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(startup_timeout_s):
            while not server.started:
                if server.should_exit:
                    raise RuntimeError(f"server on {host}:{port} failed to start")
                await anyio.sleep(0.01)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
