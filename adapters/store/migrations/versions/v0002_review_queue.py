"""The review queue: a partial index over the events of the review types.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "events_review_idx", "events", ["type", "account_id", "version"],
        postgresql_where=sa.text(
            "type IN ('ReviewRequested', 'ReviewClaimed', 'OperatorActionTaken')"),
    )


def downgrade() -> None:
    op.drop_index("events_review_idx", table_name="events")
