"""A signature on each operator read: the reader's Ed25519 signature over the region, the
command, the subject and a nonce, made by the ops tools where the reader holds an operator key
(``nonce:base64``), so an audit can tell a registered operator's read from a name anyone typed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operator_reads", sa.Column("signature", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("operator_reads", "signature")
