"""A session's last use is read from its newest refresh token.

Each rotation updated its session's row only to move ``last_used_at`` to the
moment its successor token was made, which that token records anyway. The index
on ``refresh_tokens.session_id`` gains ``created_at``, so a session's newest token
is found in the index alone. The column stays, filled in at login, for the version
before this one while instances are rolled; a later migration drops it.

Revision ID: 6f2a9d41c3e8
Revises: 2d8e6f0b4c17
Create Date: 2026-11-22 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "6f2a9d41c3e8"
down_revision: str | None = "2d8e6f0b4c17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_refresh_tokens_session_id_created_at",
        "refresh_tokens",
        ["session_id", "created_at"],
    )
    op.drop_index("ix_refresh_tokens_session_id", table_name="refresh_tokens")


def downgrade() -> None:
    # The version before reads the stored column again: bring it up to date.
    op.execute(
        "UPDATE sessions SET last_used_at = COALESCE("
        "(SELECT max(created_at) FROM refresh_tokens"
        " WHERE refresh_tokens.session_id = sessions.id), last_used_at)"
    )
    op.create_index("ix_refresh_tokens_session_id", "refresh_tokens", ["session_id"])
    op.drop_index(
        "ix_refresh_tokens_session_id_created_at", table_name="refresh_tokens"
    )
