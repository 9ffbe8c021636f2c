"""Users gain ``account_version``, which a login's new session is conditional on.

One more at each change that must end a user's sessions (password, enabled
state, roles): a login that checked the account before such a change then opens
no session after it. The server default lets the version before insert users
while instances are rolled.

Revision ID: 8e4b7c2f1a05
Revises: 3e7b5c9a1d60
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e4b7c2f1a05"
down_revision: str | None = "3e7b5c9a1d60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("account_version", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # Not in batch mode: rebuilding the table on SQLite would cascade to sessions.
    op.drop_column("users", "account_version")
