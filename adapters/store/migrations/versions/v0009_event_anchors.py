"""Event retention (``adapters/store/event_retention.py``): an account's events older than the
region's TTL may be truncated, once a snapshot holds the state they fold to, leaving an anchor
row that says where its history now starts and which chain link it continues from (with a MAC
under the region's chain key, so a row written by someone without it does not verify).

``events`` stays append-only for every role, with one exception: inside a transaction that set
``safeguards.truncating`` to ``on``, a DELETE of versions below the account's anchor. Anchors
only move forward (an UPDATE that lowers ``retained_from`` is refused) and are never deleted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_anchors",
        sa.Column("account_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("retained_from", sa.BigInteger, nullable=False),
        sa.Column("previous_chain", sa.LargeBinary, nullable=False),
        sa.Column("events_removed", sa.BigInteger, nullable=False),
        sa.Column("truncated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mac", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("retained_from > 1", name="event_anchors_after_genesis"),
    )
    op.execute("""
CREATE FUNCTION sg_event_anchors_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.account_id = OLD.account_id
     AND NEW.retained_from > OLD.retained_from THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'event anchors only move forward: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""")
    op.execute("CREATE TRIGGER event_anchors_forward_only BEFORE UPDATE OR DELETE ON "
               "event_anchors FOR EACH ROW EXECUTE FUNCTION sg_event_anchors_forward_only()")
    op.execute("""
CREATE FUNCTION sg_events_truncate_below_anchor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('safeguards.truncating', true) = 'on'
     AND EXISTS (SELECT 1 FROM event_anchors a
                  WHERE a.account_id = OLD.account_id AND OLD.version < a.retained_from) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'events are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""")
    op.execute("DROP TRIGGER events_append_only ON events")
    op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
               "FOR EACH ROW EXECUTE FUNCTION sg_events_truncate_below_anchor()")


def downgrade() -> None:
    op.execute("DROP TRIGGER events_append_only ON events")
    op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
               "FOR EACH ROW EXECUTE FUNCTION sg_events_append_only()")
    op.execute("DROP FUNCTION sg_events_truncate_below_anchor()")
    op.drop_table("event_anchors")
    op.execute("DROP FUNCTION sg_event_anchors_forward_only()")
