"""Which region a database holds: one row, claimed by the first store that opens it and never
changed (append-only). A store of another region refuses to read or write there, so a
misconfigured URL cannot mix two regions' histories in one database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "region_marker",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.CheckConstraint("singleton", name="region_marker_one_row"),
    )
    op.execute("CREATE TRIGGER region_marker_append_only BEFORE UPDATE OR DELETE ON "
               "region_marker FOR EACH ROW EXECUTE FUNCTION sg_events_append_only()")


def downgrade() -> None:
    op.drop_table("region_marker")
