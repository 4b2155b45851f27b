"""A throw-away database for benchmarks and tools: on ``SAFEGUARDS_DATABASE_URL``'s server when
that is set (created, then dropped), else on an embedded PostgreSQL started for the purpose."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from safeguards.adapters.embedded.postgres import EmbeddedPostgres


def _admin(server: str, statement: str) -> None:
    import anyio
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    anyio.run(run)


@contextlib.contextmanager
def scratch_database(prefix: str = "sg_bench") -> Iterator[str]:
    """Yields the URL of a fresh, empty database; it is gone afterwards. Call outside an event
    loop (it runs its own for the administrative statements)."""
    server = os.environ.get("SAFEGUARDS_DATABASE_URL")
    if not server:
        with EmbeddedPostgres() as pg:
            yield pg.create_database(prefix)
        return
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
