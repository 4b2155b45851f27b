"""Alembic environment for the regional event store.

``safeguards.adapters.store.migrate`` hands in a live connection through
``config.attributes["connection"]`` (run inside the caller's event loop with ``run_sync``). Run
from the ``alembic`` command line instead, it connects to ``sqlalchemy.url`` with asyncpg.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from safeguards.adapters.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection handed in and no sqlalchemy.url configured")
    asyncio.run(_run_from_url(url))


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run()
