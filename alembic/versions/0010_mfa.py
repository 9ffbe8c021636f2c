"""A second factor (TOTP, recovery codes, mfa_tokens); sessions remember how they
were authenticated (``auth_time``, ``acr``, ``amr``).

Existing sessions are filled in as what they were: a password login at their
creation (``aal1``, ``["pwd"]``). ``auth_time`` stays nullable, read as
``created_at`` when null, so the version before can still open sessions while
instances are rolled; ``acr`` and ``amr`` have server defaults for the same
reason.

Revision ID: e6f2da4bc818
Revises: d5e1c9a3b717
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e6f2da4bc818"
down_revision: str | None = "d5e1c9a3b717"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sessions", sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "sessions",
        sa.Column("acr", sa.String(length=16), nullable=False, server_default="aal1"),
    )
    op.add_column(
        "sessions",
        sa.Column("amr", sa.JSON(), nullable=False, server_default='["pwd"]'),
    )
    op.execute("UPDATE sessions SET auth_time = created_at WHERE auth_time IS NULL")
    op.create_table(
        "mfa_factors",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("pending_secret", sa.LargeBinary(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_factors_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_mfa_factors")),
    )
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_recovery_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_recovery_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_mfa_recovery_codes_code_hash")),
    )
    op.create_index(
        op.f("ix_mfa_recovery_codes_user_id"), "mfa_recovery_codes", ["user_id"]
    )
    op.create_table(
        "mfa_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_mfa_tokens_token_hash")),
    )
    op.create_index(op.f("ix_mfa_tokens_user_id"), "mfa_tokens", ["user_id"])
    op.create_index(op.f("ix_mfa_tokens_expires_at"), "mfa_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("mfa_tokens")
    op.drop_table("mfa_recovery_codes")
    op.drop_table("mfa_factors")
    # Not in batch mode: rebuilding the table on SQLite would cascade to its
    # refresh tokens.
    op.drop_column("sessions", "amr")
    op.drop_column("sessions", "acr")
    op.drop_column("sessions", "auth_time")
