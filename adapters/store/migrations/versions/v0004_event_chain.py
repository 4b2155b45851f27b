"""The tamper-evident record (``core.chain``): each event's keyed chain link, and events that
cannot be changed or removed in place.

``chain_hash`` is written by the application with every event (HMAC under the region's chain
key, which the database never holds); rows written before this migration keep NULL and are
reported as unchained. A trigger refuses UPDATE and DELETE on ``events`` for every role: a
history is only ever appended to (erasure, when it comes, goes through a reviewed path that
drops the trigger for its own transaction).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("chain_hash", sa.LargeBinary, nullable=True))
    op.execute("""
CREATE FUNCTION sg_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'events are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""")
    op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
               "FOR EACH ROW EXECUTE FUNCTION sg_events_append_only()")


def downgrade() -> None:
    op.execute("DROP TRIGGER events_append_only ON events")
    op.execute("DROP FUNCTION sg_events_append_only()")
    op.drop_column("events", "chain_hash")
