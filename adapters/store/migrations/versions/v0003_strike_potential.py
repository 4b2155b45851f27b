"""Each event's strike potential, so a backtest replays only the accounts a policy could treat
differently (``core.backtest.strike_potential``).

Rows written before this migration get 1.0: they are always replayed, which is never wrong.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("strike_potential", sa.Float(precision=24),
                                      nullable=False, server_default="1"))


def downgrade() -> None:
    op.drop_column("events", "strike_potential")
