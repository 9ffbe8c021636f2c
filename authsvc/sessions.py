"""Sessions: open one at login, rotate its refresh tokens, revoke it, list them.

Also loads the caller of an access token: a user seen through one live session.
Nothing here knows about HTTP: failures are raised as :class:`Problem` codes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    bindparam,
    delete,
    insert,
    select,
    update,
)

from . import audit, clock
from .db import get_db, get_session
from .errors import Problem
from .keys import get_keys
from .models import AuthSession, RefreshToken, User
from .tokens import AccessClaims, TokenError, hash_refresh_token, new_refresh_token
from .tokens import successor_refresh_token as successor_of


@dataclass(frozen=True)
class Client:
    """What is known of the device that logs in."""

    user_agent: str | None = None
    ip_address: str | None = None


@dataclass(frozen=True)
class IssuedTokens:
    """What a successful login or refresh hands back."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str


@dataclass(frozen=True)
class Principal(UserMixin):
    """The authenticated caller: a user seen through one live session."""

    id: str
    username: str
    email: str | None
    roles: list[str]
    created_at: datetime
    session_id: str


@dataclass(frozen=True)
class Grant:
    """Whom a session's tokens are for: all that issuing them needs to know."""

    user_id: uuid.UUID
    username: str
    roles: list[str]
    session_id: uuid.UUID
    #: The session's absolute end, which no token outlives.
    ends_at: datetime


def open_session(user: User, client: Client) -> IssuedTokens:
    """Start a session for ``user`` and issue its first tokens."""
    db = get_session()
    now = clock.now()
    grant = Grant(
        user.id,
        user.username,
        list(user.roles),
        uuid.uuid4(),
        now + timedelta(seconds=current_app.config["SESSION_TTL"]),
    )
    db.connection().execute(
        insert(AuthSession.__table__),
        {
            "id": grant.session_id,
            "user_id": user.id,
            "created_at": now,
            "last_used_at": now,
            "expires_at": grant.ends_at,
            "user_agent": (client.user_agent or None) and client.user_agent[:512],
            "ip_address": client.ip_address,
        },
    )
    refresh_token = new_refresh_token()
    refresh_expires_at = _add_refresh_token(grant, refresh_token, now)
    db.commit()
    audit.record("login_succeeded", user_id=user.id, session_id=grant.session_id)
    return _issue(grant, refresh_token, refresh_expires_at, now)


def refresh(refresh_token: str) -> IssuedTokens:
    """Rotate a refresh token: spend it and hand out its successor.

    The spend is one conditional UPDATE, so of any number of concurrent callers
    exactly one rotates. The others, and anyone presenting the token again within
    the grace window, receive the same successor; later presentations are reuse
    and revoke the whole session.
    """
    statements = _refresh_statements()
    now = clock.now()
    # Read outside the transaction: the conditional spend below decides races.
    find = get_db().driver_query(statements.find)
    found = find.one_or_none({"token_hash": hash_refresh_token(refresh_token)})
    if found is None:
        raise Problem("invalid_refresh_token")
    grant = Grant(
        found.user_id, found.username, found.roles, found.session_id, found.ends_at
    )
    if not (found.is_active and found.revoked_at is None and grant.ends_at > now):
        raise Problem("invalid_refresh_token")
    successor = successor_of(get_keys().refresh_key, refresh_token)
    db = get_session()
    spent_at = found.spent_at
    if spent_at is None:
        if found.expires_at <= now:
            raise Problem("invalid_refresh_token")
        spend = {"token_id": found.token_id, "now": now}
        connection = db.connection()
        if connection.execute(statements.spend, spend).rowcount == 1:
            expires_at = _add_refresh_token(grant, successor, now)
            connection.execute(statements.touch, spend | {"sid": grant.session_id})
            db.commit()
            audit.record(
                "refreshed", user_id=grant.user_id, session_id=grant.session_id
            )
            return _issue(grant, successor, expires_at, now)
        db.commit()  # end the transaction that lost, releasing SQLite's write lock
        spent_at = db.scalar(
            select(RefreshToken.spent_at).where(RefreshToken.id == found.token_id)
        )
    grace = current_app.config["REFRESH_REUSE_GRACE"]
    in_grace = spent_at is not None and now - spent_at <= timedelta(seconds=grace)
    if grace > 0 and in_grace:
        expires_at = db.scalar(
            select(RefreshToken.expires_at).where(
                RefreshToken.token_hash == hash_refresh_token(successor)
            )
        )
        if expires_at is not None:
            return _issue(grant, successor, expires_at, now)
    audit.record(
        "refresh_reuse_detected", user_id=grant.user_id, session_id=grant.session_id
    )
    revoke_sessions(AuthSession.id == grant.session_id, reason="refresh_reuse")
    raise Problem("invalid_refresh_token")


@dataclass(frozen=True)
class _RefreshStatements:
    find: Select[Any]
    spend: Update
    touch: Update


@cache
def _refresh_statements() -> _RefreshStatements:
    # Built once, and on tables rather than entities: refresh is a hot path, and
    # these skip both statement construction and the ORM's bookkeeping.
    tokens, sessions = RefreshToken.__table__, AuthSession.__table__
    find = (
        select(
            tokens.c.id.label("token_id"),
            tokens.c.expires_at,
            tokens.c.spent_at,
            sessions.c.id.label("session_id"),
            sessions.c.revoked_at,
            sessions.c.expires_at.label("ends_at"),
            User.id.label("user_id"),
            User.username,
            User.roles,
            User.is_active,
        )
        .join(sessions, tokens.c.session_id == sessions.c.id)
        .join(User, sessions.c.user_id == User.id)
        .where(tokens.c.token_hash == bindparam("token_hash"))
    )
    spend = (
        update(tokens)
        .where(tokens.c.id == bindparam("token_id"), tokens.c.spent_at.is_(None))
        .values(spent_at=bindparam("now"))
    )
    touch = (
        update(sessions)
        .where(sessions.c.id == bindparam("sid"))
        .values(last_used_at=bindparam("now"))
    )
    return _RefreshStatements(find, spend, touch)


def logout(principal: Principal, *, everywhere: bool = False) -> None:
    """Revoke the caller's session, or with ``everywhere`` every session of theirs."""
    if everywhere:
        condition = AuthSession.user_id == uuid.UUID(principal.id)
    else:
        condition = AuthSession.id == uuid.UUID(principal.session_id)
    revoke_sessions(condition, reason="logout")
    audit.record(
        "logout", user_id=principal.id, session_id=principal.session_id, all=everywhere
    )


def revoke_sessions(condition: ColumnElement[bool], *, reason: str) -> int:
    """Mark the live sessions matching ``condition`` revoked, now; count them."""
    db = get_session()
    result = db.execute(
        update(AuthSession)
        .where(condition, AuthSession.revoked_at.is_(None))
        .values(revoked_at=clock.now(), revoked_reason=reason)
        .returning(AuthSession.id, AuthSession.user_id)
    )
    revoked = result.all()
    db.commit()
    for session_id, user_id in revoked:
        audit.record(
            "session_revoked", user_id=user_id, session_id=session_id, reason=reason
        )
    return len(revoked)


def revoke_user_sessions(user_id: uuid.UUID, *, reason: str) -> int:
    """Revoke every live session of a user."""
    return revoke_sessions(AuthSession.user_id == user_id, reason=reason)


def list_sessions(principal: Principal) -> list[AuthSession]:
    """The caller's live sessions, newest first."""
    return list(
        get_session().scalars(
            select(AuthSession)
            .where(
                AuthSession.user_id == uuid.UUID(principal.id),
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > clock.now(),
            )
            .order_by(AuthSession.created_at.desc(), AuthSession.id)
        )
    )


def revoke_own_session(principal: Principal, session_id: str) -> None:
    """Revoke one of the caller's live sessions; any other id is ``not_found``."""
    try:
        key = uuid.UUID(session_id)
    except ValueError:
        raise Problem("not_found", "No such session.") from None
    condition = (
        (AuthSession.id == key)
        & (AuthSession.user_id == uuid.UUID(principal.id))
        & (AuthSession.expires_at > clock.now())
    )
    if not revoke_sessions(condition, reason="revoked_by_user"):
        raise Problem("not_found", "No such session.")


#: Sessions this long past their end or revocation are deleted by ``prune``.
PRUNE_AFTER = timedelta(days=1)


def prune_sessions(*, batch_size: int = 5000) -> int:
    """Delete sessions that ended or were revoked over a day ago, in small batches.

    Each batch is its own short transaction, so pruning never holds the table
    for long; refresh tokens go with their session (ON DELETE CASCADE).
    """
    db = get_session()
    cutoff = clock.now() - PRUNE_AFTER
    dead = (AuthSession.expires_at < cutoff) | (AuthSession.revoked_at < cutoff)
    deleted = 0
    while True:
        ids = db.scalars(select(AuthSession.id).where(dead).limit(batch_size)).all()
        if not ids:
            return deleted
        db.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(ids)))
        db.execute(delete(AuthSession).where(AuthSession.id.in_(ids)))
        db.commit()
        deleted += len(ids)


def load_principal(claims: AccessClaims) -> Principal:
    """Load the user and session an access token names, in one query.

    Raises ``invalid_token`` when either is gone or the user is disabled, and
    ``token_revoked`` when the session was revoked or has ended.
    """
    try:
        user_id, session_id = uuid.UUID(claims.subject), uuid.UUID(claims.session_id)
    except ValueError:
        raise Problem("invalid_token") from None
    query = get_db().driver_query(_principal_query())
    row = query.one_or_none({"session_id": session_id, "user_id": user_id})
    if row is None or not row.is_active:
        raise Problem("invalid_token")
    if row.revoked_at is not None or row.expires_at <= clock.now():
        raise Problem("token_revoked")
    return Principal(
        id=claims.subject,
        username=row.username,
        email=row.email,
        roles=list(row.roles),
        created_at=row.created_at,
        session_id=claims.session_id,
    )


@cache
def _principal_query() -> Select[Any]:
    # Built once: the hot path then skips SQLAlchemy's statement construction and
    # goes straight to its compiled-statement cache.
    return (
        select(
            User.username,
            User.email,
            User.roles,
            User.created_at,
            User.is_active,
            AuthSession.revoked_at,
            AuthSession.expires_at,
        )
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(
            AuthSession.id == bindparam("session_id"),
            User.id == bindparam("user_id"),
        )
    )


def _add_refresh_token(grant: Grant, token: str, now: datetime) -> datetime:
    """Store a refresh token's hash; it dies when idle, or with its session."""
    idle = now + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"])
    expires_at = min(idle, grant.ends_at)
    get_session().connection().execute(
        insert(RefreshToken.__table__),
        {
            "session_id": grant.session_id,
            "token_hash": hash_refresh_token(token),
            "created_at": now,
            "expires_at": expires_at,
        },
    )
    return expires_at


def _issue(
    grant: Grant, refresh_token: str, refresh_expires_at: datetime, now: datetime
) -> IssuedTokens:
    issued_at = int(now.timestamp())
    ttl = current_app.config["ACCESS_TOKEN_TTL"]
    expires_at = min(issued_at + ttl, int(grant.ends_at.timestamp()))
    access_token = get_keys().sign(
        subject=str(grant.user_id),
        username=grant.username,
        session_id=str(grant.session_id),
        roles=list(grant.roles),
        issued_at=issued_at,
        expires_at=expires_at,
    )
    return IssuedTokens(
        access_token=access_token,
        expires_in=expires_at - issued_at,
        refresh_token=refresh_token,
        refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
        session_id=str(grant.session_id),
    )


def introspect(token: str) -> dict[str, object]:
    """RFC 7662: the claims of a live access token, or ``{"active": false}``.

    Live means well signed, unexpired, and of a session that is not revoked and a
    user who is active, checked now, so a revoked session reads inactive at once.
    """
    keys = get_keys()
    try:
        claims = keys.verify(token, now=int(clock.now().timestamp()))
        principal = load_principal(claims)
    except (TokenError, Problem):
        return {"active": False}
    return {
        "active": True,
        "sub": claims.subject,
        "sid": claims.session_id,
        "username": principal.username,
        "roles": list(claims.roles),
        "exp": claims.expires_at,
        "iat": claims.issued_at,
        "iss": keys.issuer,
        "aud": keys.audience,
        "jti": claims.token_id,
        "token_type": "access_token",
    }


def revoke_token(token: str, *, hint: str | None = None) -> None:
    """RFC 7009: revoke the session of a refresh or access token, if it is known."""
    finders = [_session_of_refresh_token, _session_of_access_token]
    if hint == "access_token":
        finders.reverse()
    for find in finders:
        session_id = find(token)
        if session_id is not None:
            revoke_sessions(AuthSession.id == session_id, reason="revoked_by_client")
            return


def _session_of_refresh_token(token: str) -> uuid.UUID | None:
    return get_session().scalar(
        select(RefreshToken.session_id).where(
            RefreshToken.token_hash == hash_refresh_token(token)
        )
    )


def _session_of_access_token(token: str) -> uuid.UUID | None:
    try:
        claims = get_keys().verify(token, now=int(clock.now().timestamp()))
        return uuid.UUID(claims.session_id)
    except (TokenError, ValueError):
        return None
