"""The console's pending-approvals and appeals pages (``ops/console/approvals.py``): partial
indexes over the few events of the two types they look for, so a page reads those rows and not
the region's whole events table.

- ``events_approval_requests_idx`` (``account_id, occurred_at``) over ``ApprovalRequested``:
  the accounts with a request since a time, after a cursor, in account order.
- ``events_appeals_filed_idx`` (``account_id, version``) over ``AppealFiled``: the accounts with
  an appeal, after a cursor, in account order; and one account's appeals, newest first.

Indexes carry no privileges of their own: a region's role reads through them with the ``SELECT``
it holds on ``events`` (``adapters/store/region_roles.py``); nothing is granted here.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("events_approval_requests_idx", "events", ["account_id", "occurred_at"],
                    postgresql_where=sa.text("type = 'ApprovalRequested'"))
    op.create_index("events_appeals_filed_idx", "events", ["account_id", "version"],
                    postgresql_where=sa.text("type = 'AppealFiled'"))


def downgrade() -> None:
    op.drop_index("events_appeals_filed_idx", table_name="events")
    op.drop_index("events_approval_requests_idx", table_name="events")
