"""Per-account data keys for crypto-shredding (``adapters/store/sealing.py``): one row per
account whose events carry personal values, its key wrapped under the region's data master key.
Erasure deletes the row; nothing else refers to it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_keys",
        sa.Column("account_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("account_keys")
