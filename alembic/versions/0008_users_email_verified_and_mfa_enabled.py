"""Users gain ``email_verified`` and ``mfa_enabled``, both false until proven.

The flags every user body shows and the login pipeline reads. The tables that
prove them (codes sent by e-mail, the second factor's secret) come later and
keep these in step; an existing address counts as unverified.

Revision ID: c4d2e8f1a708
Revises: 8e4b7c2f1a05
Create Date: 2026-12-02 01:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4d2e8f1a708"
down_revision: str | None = "8e4b7c2f1a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "email_verified", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    op.add_column(
        "users",
        sa.Column(
            "mfa_enabled", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )


def downgrade() -> None:
    # Not in batch mode: rebuilding the table on SQLite would cascade to sessions.
    op.drop_column("users", "mfa_enabled")
    op.drop_column("users", "email_verified")
