"""Index sessions.revoked_at, so pruning finds revoked sessions without a scan.

Revision ID: 5b1e0c7d2a94
Revises: 1727fd79f275
Create Date: 2026-11-21 20:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5b1e0c7d2a94"
down_revision: str | None = "1727fd79f275"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_sessions_revoked_at"), "sessions", ["revoked_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_revoked_at"), table_name="sessions")
