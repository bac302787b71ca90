"""login messages: where a login link was offered (its DM, the click's reply), and when its
end was told there

The response_url is a capability to post as the bot in that conversation for 30 minutes,
so it is stored encrypted (Fernet, as the refresh token), in Text.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_attempt") as batch:
        batch.add_column(sa.Column("dm_channel", sa.String(32)))
        batch.add_column(sa.Column("dm_ts", sa.String(32)))
        batch.add_column(sa.Column("reply_url_encrypted", sa.Text()))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True)))
    # The sweep looks for ended logins whose end was not told yet.
    op.create_index("ix_login_attempt_open", "login_attempt", ["closed_at", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_login_attempt_open", table_name="login_attempt")
    with op.batch_alter_table("login_attempt") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("reply_url_encrypted")
        batch.drop_column("dm_ts")
        batch.drop_column("dm_channel")
