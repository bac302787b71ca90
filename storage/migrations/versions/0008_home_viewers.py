"""home viewers: who opened the bot's Home tab, so it can be refreshed when a link changes

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "home_viewer",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("enterprise_id", sa.String(32), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_home_viewer_opened", "home_viewer", ["team_id", "opened_at"])


def downgrade() -> None:
    op.drop_index("ix_home_viewer_opened", table_name="home_viewer")
    op.drop_table("home_viewer")
