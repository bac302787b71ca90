"""one live check per account at a time; login links withdrawn by an unlink

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vcc_account") as batch:
        batch.add_column(sa.Column("check_lease_until", sa.DateTime(timezone=True)))
    with op.batch_alter_table("login_attempt") as batch:
        batch.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True)))
    op.create_index("ix_login_attempt_account", "login_attempt", ["team_id", "account_id"])


def downgrade() -> None:
    op.drop_index("ix_login_attempt_account", table_name="login_attempt")
    with op.batch_alter_table("login_attempt") as batch:
        batch.drop_column("withdrawn_at")
    with op.batch_alter_table("vcc_account") as batch:
        batch.drop_column("check_lease_until")
