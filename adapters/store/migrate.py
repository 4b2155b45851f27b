"""Schema migrations, run programmatically: ``await migrate(database_url)`` is idempotent.

The alembic scripts ship inside the package (``safeguards.adapters.store:migrations``), so an
installed wheel migrates without the source tree. Concurrent callers (two nodes starting at once)
serialise on a transaction-scoped advisory lock, so the second finds the schema at head.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from safeguards.adapters.store.errors import (
    CredentialRefused,
    MigrationNotPermitted,
    StoreFailure,
    driver_sqlstate,
    translate_errors,
)
from safeguards.adapters.store.region_roles import with_region_password

SCRIPT_LOCATION = "safeguards.adapters.store:migrations"
_MIGRATION_LOCK = 0x5AFE_57_0E  # pg_advisory_xact_lock key shared by every migrating process


def async_url(database_url: str) -> str:
    """``postgresql://...`` (what operators and the fixtures hand out) with the asyncpg driver,
    and the region's password where the URL names a region's role without one."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return with_region_password("postgresql+asyncpg://" + database_url[len(prefix):])
    raise ValueError("database URL must start with postgresql:// (or postgresql+asyncpg://)")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> str | None:
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    current = MigrationContext.configure(connection).get_current_revision()
    if current == head_revision():  # at head: nothing to change (a region's role may not)
        return current
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(database_url: str | AsyncEngine, **engine_options: Any) -> str:
    """Bring the database's schema to head; return the revision it is at. Safe to repeat."""
    own = not isinstance(database_url, AsyncEngine)
    engine = (create_async_engine(async_url(database_url), **engine_options)
              if isinstance(database_url, str) else database_url)
    try:
        with translate_errors():
            async with engine.begin() as conn:
                revision = await conn.run_sync(_upgrade)
    except StoreFailure as exc:
        cause = exc.__cause__
        if (not isinstance(exc, CredentialRefused) and cause is not None
                and driver_sqlstate(cause) == "42501"):  # a region's role, schema behind
            raise MigrationNotPermitted(
                "the schema is behind and this credential may not migrate it: migrate with the "
                "administrative credential (safeguards ops provision)") from exc
        raise
    finally:
        if own:
            await engine.dispose()
    if revision is None:
        raise RuntimeError("migration finished without a revision")
    return revision
