"""Signing keys: the key ring shared by every instance.

Revision ID: 2d8e6f0b4c17
Revises: 9c3f41a7e8b2
Create Date: 2026-11-21 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2d8e6f0b4c17"
down_revision: str | None = "9c3f41a7e8b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint(
            "algorithm", "generation", name=op.f("uq_signing_keys_algorithm")
        ),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
