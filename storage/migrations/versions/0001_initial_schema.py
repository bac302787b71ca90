"""initial schema: VCC accounts and login attempts

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("link_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("state_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("browser_hash", sa.String(64), nullable=True),
        sa.Column("code_verifier_encrypted", sa.Text(), nullable=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("slack_user_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        _ts("created_at", nullable=False),
        _ts("expires_at", nullable=False),
        _ts("consumed_at"),
    )
    op.create_table(
        "vcc_account",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(16), nullable=True),
        sa.Column("login_host", sa.String(255), nullable=True),
        sa.Column("instance_url", sa.String(255), nullable=True),
        sa.Column("identity_url", sa.String(512), nullable=True),
        sa.Column("org_id", sa.String(18), nullable=True),
        sa.Column("sf_user_id", sa.String(18), nullable=True),
        sa.Column("sf_username", sa.String(255), nullable=True),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("permission_warnings", sa.Text(), nullable=True),
        sa.Column("linked_by", sa.String(32), nullable=True),
        _ts("linked_at"),
        sa.Column("notify_channel", sa.String(32), nullable=True),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("health_reason", sa.Text(), nullable=True),
        _ts("health_checked_at"),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("team_id", "account_id", name="uq_vcc_account_team"),
    )
    op.create_index("ix_vcc_account_api_user", "vcc_account", ["org_id", "sf_user_id"])


def downgrade() -> None:
    op.drop_index("ix_vcc_account_api_user", table_name="vcc_account")
    op.drop_table("vcc_account")
    op.drop_table("login_attempt")
