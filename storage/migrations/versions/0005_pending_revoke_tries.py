"""pending tokens: revokes Salesforce did not answer back off, and are given up after a cap

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_token") as batch:
        batch.add_column(
            sa.Column("revoke_tries", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("next_try_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("pending_token") as batch:
        batch.drop_column("next_try_at")
        batch.drop_column("revoke_tries")
