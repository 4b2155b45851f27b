"""The review queue reads ``ApprovalGranted`` too (``adapters/store/reviews.py``): a review is
settled by a second operator's approval that took effect, not by any ``approve`` (one's own, or
of another level, changes nothing). ``events_review_queue_idx`` covers the four types the
queue's query reads, in place of ``events_review_idx`` (three), so the query keeps to the index.

The new index is built before the old one is dropped: the build holds off appends (as every
index build in these migrations does) but not reads; the drop's exclusive lock lasts only to the
migration's commit, just after.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "events_review_queue_idx", "events", ["type", "account_id", "version"],
        postgresql_where=sa.text("type IN ('ReviewRequested', 'ReviewClaimed', "
                                 "'OperatorActionTaken', 'ApprovalGranted')"),
    )
    op.drop_index("events_review_idx", table_name="events")


def downgrade() -> None:
    op.create_index(
        "events_review_idx", "events", ["type", "account_id", "version"],
        postgresql_where=sa.text(
            "type IN ('ReviewRequested', 'ReviewClaimed', 'OperatorActionTaken')"),
    )
    op.drop_index("events_review_queue_idx", table_name="events")
