"""link integrity: API-user slots, health claims, pending tokens, audit trail, custom domains

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("vcc_account") as batch:
        batch.add_column(sa.Column("api_user_slot", sa.Integer(), nullable=True))
        batch.add_column(_ts("next_check_at"))
    _backfill_slots()
    with op.batch_alter_table("vcc_account") as batch:
        batch.create_unique_constraint(
            "uq_vcc_account_slot", ["org_id", "sf_user_id", "api_user_slot"]
        )
        batch.create_check_constraint("ck_vcc_account_slot", "api_user_slot BETWEEN 1 AND 5")
    op.create_index("ix_vcc_account_next_check", "vcc_account", ["status", "next_check_at"])
    with op.batch_alter_table("login_attempt") as batch:
        batch.add_column(sa.Column("login_host", sa.String(255), nullable=True))
    op.create_table(
        "salesforce_api_user",
        sa.Column("org_id", sa.String(18), primary_key=True),
        sa.Column("sf_user_id", sa.String(18), primary_key=True),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "pending_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("login_host", sa.String(255), nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("org_id", sa.String(18), nullable=True),
        sa.Column("sf_username", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_audit_event_account", "audit_event", ["team_id", "account_id", "id"])


def _backfill_slots() -> None:
    """Give links made before slots existed a slot each, oldest first (at most five)."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, org_id, sf_user_id FROM vcc_account "
            "WHERE status = 'Linked' AND org_id IS NOT NULL AND sf_user_id IS NOT NULL "
            "ORDER BY org_id, sf_user_id, linked_at, id"
        )
    ).all()
    counts: dict[tuple[str, str], int] = {}
    for row_id, org_id, user_id in rows:
        slot = counts.get((org_id, user_id), 0) + 1
        counts[(org_id, user_id)] = slot
        if slot <= 5:
            conn.execute(
                sa.text("UPDATE vcc_account SET api_user_slot = :slot WHERE id = :id"),
                {"slot": slot, "id": row_id},
            )


def downgrade() -> None:
    op.drop_index("ix_audit_event_account", table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_table("pending_token")
    op.drop_table("salesforce_api_user")
    with op.batch_alter_table("login_attempt") as batch:
        batch.drop_column("login_host")
    op.drop_index("ix_vcc_account_next_check", table_name="vcc_account")
    with op.batch_alter_table("vcc_account") as batch:
        batch.drop_constraint("ck_vcc_account_slot", type_="check")
        batch.drop_constraint("uq_vcc_account_slot", type_="unique")
        batch.drop_column("next_check_at")
        batch.drop_column("api_user_slot")
