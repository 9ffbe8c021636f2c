"""Throttle counters: fixed windows of failed logins and registrations.

Revision ID: 9c3f41a7e8b2
Revises: 5b1e0c7d2a94
Create Date: 2026-11-21 20:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9c3f41a7e8b2"
down_revision: str | None = "5b1e0c7d2a94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttle_counters",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttle_counters")),
    )
    op.create_index(
        op.f("ix_throttle_counters_expires_at"), "throttle_counters", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_throttle_counters_expires_at"), table_name="throttle_counters"
    )
    op.drop_table("throttle_counters")
