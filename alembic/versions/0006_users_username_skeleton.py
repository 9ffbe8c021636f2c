"""Users get the Unicode TR39 skeleton of their name, unique: no look-alike names.

Existing accounts are given theirs oldest first; an account whose name looks like
an older account's keeps a null skeleton (both stay usable), and no new name can
look like either.

Revision ID: 3e7b5c9a1d60
Revises: 6f2a9d41c3e8
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from authsvc.usernames import skeleton

revision: str = "3e7b5c9a1d60"
down_revision: str | None = "6f2a9d41c3e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table(
    "users",
    sa.column("id", sa.Uuid),
    sa.column("username_key", sa.String),
    sa.column("username_skeleton", sa.String),
    sa.column("created_at", sa.DateTime),
)


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("username_skeleton", sa.String(length=512), nullable=True)
    )
    connection = op.get_bind()
    taken: set[str] = set()
    rows = connection.execute(
        sa.select(users.c.id, users.c.username_key).order_by(
            users.c.created_at, users.c.id
        )
    )
    for user_id, key in rows.all():
        name_skeleton = skeleton(key)
        if name_skeleton in taken:
            continue
        taken.add(name_skeleton)
        connection.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(username_skeleton=name_skeleton)
        )
    op.create_index(
        op.f("ix_users_username_skeleton"),
        "users",
        ["username_skeleton"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_users_username_skeleton"), table_name="users")
    op.drop_column("users", "username_skeleton")
