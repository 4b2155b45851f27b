"""The regional event store: PostgreSQL (SQLAlchemy Core on asyncpg) and an in-memory twin."""

from safeguards.adapters.store.memory import InMemoryEventStore
from safeguards.adapters.store.migrate import migrate
from safeguards.adapters.store.postgres import PostgresEventStore

__all__ = ["InMemoryEventStore", "PostgresEventStore", "migrate"]
