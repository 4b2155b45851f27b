"""Who read what: every operator read of a region's store (history, state, explanations, RCA
reports, backtests, the review queue, chain checks) leaves a row, append-only like the events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_reads",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
    )
    op.execute("CREATE TRIGGER operator_reads_append_only BEFORE UPDATE OR DELETE ON "
               "operator_reads FOR EACH ROW EXECUTE FUNCTION sg_events_append_only()")


def downgrade() -> None:
    op.drop_table("operator_reads")
