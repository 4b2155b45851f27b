"""Alembic migrations of the regional event store, shipped inside the package."""
