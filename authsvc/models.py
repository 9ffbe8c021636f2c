"""Tables: users, their sessions, each session's refresh tokens, throttle counters."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
    false,
    func,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from .db import Base, UTCDateTime


class User(Base):
    """An account. ``id`` is random and never reused, so old tokens never match."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64))
    #: NFKC-normalised, case-folded username: what uniqueness and login compare.
    username_key: Mapped[str] = mapped_column(String(64), unique=True)
    #: Unicode TR39 skeleton of ``username_key``: names that look alike share it.
    #: Null only for an account older than the rule whose name looked like an
    #: older account's. A Hangul syllable's skeleton is up to seven characters.
    username_skeleton: Mapped[str | None] = mapped_column(
        String(512), unique=True, index=True
    )
    email: Mapped[str | None] = mapped_column(String(320))
    #: NFKC-normalised, case-folded e-mail.
    email_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: One more at each change that must end the user's sessions (password,
    #: enabled state, roles). A login opens its session only if the version it
    #: read is still the user's, so no session outlives a change it raced.
    account_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The owner proved they read ``email``; a new or changed address starts false.
    email_verified: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    #: A second factor is on: a right password alone opens no session.
    mfa_enabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )

    sessions: Mapped[list[AuthSession]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class RefreshToken(Base):
    """One link in a session's rotation chain, kept only as a hash of the token.

    Spent links stay until the session is pruned, so presenting any old token
    again is recognised as reuse rather than as an unknown token.
    """

    __tablename__ = "refresh_tokens"
    # Also finds a session's newest link (``AuthSession.last_used_at``) at once.
    __table_args__ = (
        Index("ix_refresh_tokens_session_id_created_at", "session_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Idle expiry: a token not rotated by then is dead.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthSession(Base):
    """One login: what access tokens name in ``sid`` and what logout revokes."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Absolute end of the session; rotation never moves it.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    #: The last login or refresh: when its newest refresh token was issued. Read,
    #: not stored, so that a rotation writes no row of the session.
    last_used_at: Mapped[datetime] = column_property(
        select(func.max(RefreshToken.created_at))
        .where(RefreshToken.session_id == id)
        .correlate_except(RefreshToken)
        .scalar_subquery()
    )
    #: What the version before read as ``last_used_at`` and moved at each refresh.
    #: It still reads it while instances are rolled, so a login still fills it in;
    #: nothing else does. A later migration drops it.
    stored_last_used_at: Mapped[datetime] = mapped_column("last_used_at", UTCDateTime)

    user: Mapped[User] = relationship(back_populates="sessions")


class ThrottleCounter(Base):
    """A fixed-window counter of attempts, shared by every worker and instance."""

    __tablename__ = "throttle_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    #: End of the window; a counter past it starts again from zero.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SigningKey(Base):
    """A key of the ring: its public JWK, and its private part encrypted.

    The private key is PKCS#8, encrypted under a key derived from the service
    secret, so every instance sharing the database and secret can sign with it.
    """

    __tablename__ = "signing_keys"
    __table_args__ = (UniqueConstraint("algorithm", "generation"),)

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: 1 for an algorithm's first key, then one more per rotation; unique per
    #: algorithm, so two instances starting at once cannot both make a first key.
    generation: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSON)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When it starts signing; published from ``created_at`` on.
    activates_at: Mapped[datetime] = mapped_column(UTCDateTime)
