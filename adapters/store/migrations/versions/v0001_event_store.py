"""The regional event store: events with the commit-ordered feed, snapshots, inbox, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

C_TEXT = sa.Text(collation="C")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("account_id", C_TEXT, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("causation_id", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("policy_version", sa.Text, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "version", name="events_account_version_key"),
        sa.UniqueConstraint("event_id", name="events_event_id_key"),
        sa.UniqueConstraint("region", "position", name="events_feed_key"),
    )
    op.create_index("events_account_time_idx", "events", ["account_id", "occurred_at"])
    op.create_table(
        "feed_counter",
        sa.Column("region", sa.Text, primary_key=True),
        sa.Column("last_position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("account_id", C_TEXT, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("fold_version", sa.Integer, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("account_id", "version", "fold_version", name="snapshots_pkey"),
    )
    op.create_table(
        "inbox",
        sa.Column("inbox_key", sa.Text, primary_key=True),
        sa.Column("account_id", C_TEXT, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("payload", pg.BYTEA, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("outbox_pending_idx", "outbox", ["id"],
                    postgresql_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("snapshots")
    op.drop_table("feed_counter")
    op.drop_table("events")
