"""Tables: users, sessions, refresh tokens, counters, keys, codes, outbox, MFA."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
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
    #: When the user last proved who they are in this session (RFC 9068
    #: ``auth_time``): the login, or a later reauthentication. Null only for a
    #: session opened by the version before while instances are rolled, which
    #: reads as its ``created_at``.
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The level of that authentication: ``aal1`` or ``aal2`` (``acr``).
    acr: Mapped[str] = mapped_column(String(16), server_default="aal1")
    #: How it was made, as RFC 8176 names methods (``amr``).
    amr: Mapped[list[str]] = mapped_column(JSON, server_default='["pwd"]')

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


# --- e-mail and account recovery ----------------------------------------------


class OneTimeCode(Base):
    """A user's outstanding code and link token of one purpose, kept as keyed hashes.

    One row per user and purpose (reset, verify, change): a newer message replaces
    it. Spent, expired and burnt rows are refused alike.
    """

    __tablename__ = "one_time_codes"
    __table_args__ = (UniqueConstraint("user_id", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    purpose: Mapped[str] = mapped_column(String(16))
    #: HMAC of the six-digit code, bound to the user and purpose.
    code_hash: Mapped[str] = mapped_column(String(64))
    #: HMAC of the link token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The address the message went to: the one verified, or the new one.
    email: Mapped[str] = mapped_column(String(320))
    #: Wrong codes tried; at the limit the row is burnt.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """A message waiting to be sent: its kind and recipient, never a code.

    The sender makes the code when it sends, and deletes the row once sent or
    given up, so the table holds only what is on its way.
    """

    __tablename__ = "mail_outbox"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: The recipient, as the request gave it or the account had it.
    address: Mapped[str] = mapped_column(String(320))
    #: The account it concerns; none for a reset, which the sender resolves.
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Not before then: the next try, or the end of a sender's claim.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class MfaFactor(Base):
    """A user's TOTP factor: the secret, encrypted, and the last step it accepted.

    ``secret`` is set once the factor is confirmed (``users.mfa_enabled`` goes
    with it); ``pending_secret`` while an enrolment waits for its first code.
    """

    __tablename__ = "mfa_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    pending_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The newest 30-second step a code was accepted for: it and every earlier
    #: step are refused from then on.
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecoveryCode(Base):
    """One recovery code of a user, kept only as a keyed hash; usable once."""

    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaToken(Base):
    """The ``mfa_token`` a right password hands out: kept as a keyed hash, once."""

    __tablename__ = "mfa_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: Wrong codes presented with it; at five it is burnt.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
