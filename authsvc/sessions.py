"""Sessions: open one at login, rotate its refresh tokens, revoke it, list them.

Also loads the caller of an access token: a user seen through one live session.
Nothing here knows about HTTP: failures are raised as :class:`Problem` codes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from flask import Flask, current_app
from flask_login import UserMixin
from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Select,
    String,
    Update,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from . import audit, clock
from .db import UTCDateTime, get_db, get_session
from .errors import Problem
from .keys import get_keys, key_set_version
from .models import AuthSession, RefreshToken, User
from .tokens import (
    AccessClaims,
    TokenError,
    derive_key,
    hash_opaque_token,
    new_opaque_token,
)
from .tokens import successor_refresh_token as successor_of

#: Where the app keeps the key of the PRF that derives refresh successors.
REFRESH_KEY = "authsvc.refresh_key"


def init_app(app: Flask) -> None:
    """Derive the refresh-successor key now if the secret is configured.

    Otherwise it is derived on the first refresh, once the key ring has resolved
    the secret: a generated one is written only when something needs a key.
    """
    if app.config.get("SECRET_KEY"):
        app.extensions[REFRESH_KEY] = _derive_refresh_key(app.config["SECRET_KEY"])


def _refresh_key() -> bytes:
    """The app's key of the PRF that derives each refresh token's successor."""
    key: bytes | None = current_app.extensions.get(REFRESH_KEY)
    if key is None:
        get_keys()  # resolves the secret, generating it on first use
        key = _derive_refresh_key(current_app.config["SECRET_KEY"])
        current_app.extensions[REFRESH_KEY] = key
    return key


def _derive_refresh_key(secret: str) -> bytes:
    return derive_key(secret, "refresh-successor")


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


class Account(Protocol):
    """Whom a session is opened for: a stored user, or a row read for login."""

    id: uuid.UUID
    username: str
    roles: list[str]
    #: The user's ``account_version`` when their credentials were checked.
    account_version: int


def open_session(user: Account, client: Client) -> IssuedTokens:
    """Start a session for ``user`` and issue its first tokens.

    The session is opened only if the user is still active and still at the
    ``account_version`` read when their credentials were checked: a password
    change, a disabling or a deletion that raced the login leaves no session
    behind, and the login fails as ``invalid_credentials``.
    """
    now = clock.now()
    grant = Grant(
        user.id,
        user.username,
        list(user.roles),
        uuid.uuid4(),
        now + timedelta(seconds=current_app.config["SESSION_TTL"]),
    )
    refresh_token = new_opaque_token()
    params = {
        "session_id": grant.session_id,
        "user_id": user.id,
        "account_version": user.account_version,
        "now": now,
        "ends_at": grant.ends_at,
        "user_agent": (client.user_agent or None) and client.user_agent[:512],
        "ip_address": client.ip_address,
        "token_hash": hash_opaque_token(refresh_token),
        "expires_at": _refresh_token_expiry(grant, now),
    }
    if not _start(params):
        audit.record("login_failed", user_id=user.id)
        raise Problem("invalid_credentials")
    audit.record("login_succeeded", user_id=user.id, session_id=grant.session_id)
    return _issue(grant, refresh_token, params["expires_at"], now)


def refresh(refresh_token: str) -> IssuedTokens:
    """Rotate a refresh token: spend it and hand out its successor.

    The spend is one conditional UPDATE, so of any number of concurrent callers
    exactly one rotates. The others, and anyone presenting the token again within
    the grace window, receive the same successor; later presentations are reuse
    and revoke the whole session.
    """
    db, statements, keys = get_db(), _statements(), get_keys()
    now = clock.now()
    # Read outside the transaction: the conditional spend below decides races.
    # The key set's version comes along, so signing needs no query of its own.
    found = db.statement(statements.find).first(
        {
            "token_hash": hash_opaque_token(refresh_token),
            "key_algorithm": keys.algorithm,
        },
        retry=True,
    )
    if found is None:
        raise Problem("invalid_refresh_token")
    grant = Grant(
        found.user_id, found.username, found.roles, found.session_id, found.ends_at
    )
    # None when no key is stored yet: the ring makes the first as it loads.
    key_version = found.key_version or 0
    if not (found.is_active and found.revoked_at is None and grant.ends_at > now):
        raise Problem("invalid_refresh_token")
    successor = successor_of(_refresh_key(), refresh_token)
    spent_at = found.spent_at
    if spent_at is None:
        if found.expires_at <= now:
            raise Problem("invalid_refresh_token")
        params = {
            "token_id": found.token_id,
            "session_id": grant.session_id,
            "now": now,
            "token_hash": hash_opaque_token(successor),
            "expires_at": _refresh_token_expiry(grant, now),
        }
        if _rotate(params):
            audit.record(
                "refreshed", user_id=grant.user_id, session_id=grant.session_id
            )
            return _issue(grant, successor, params["expires_at"], now, key_version)
        spent_at = db.statement(statements.spent_at).first(params, retry=True).spent_at
    grace = current_app.config["REFRESH_REUSE_GRACE"]
    in_grace = spent_at is not None and now - spent_at <= timedelta(seconds=grace)
    if grace > 0 and in_grace:
        issued = db.statement(statements.expiry).first(
            {"token_hash": hash_opaque_token(successor)}, retry=True
        )
        if issued is not None:
            return _issue(grant, successor, issued.expires_at, now, key_version)
    audit.record(
        "refresh_reuse_detected", user_id=grant.user_id, session_id=grant.session_id
    )
    revoke_sessions(AuthSession.id == grant.session_id, reason="refresh_reuse")
    raise Problem("invalid_refresh_token")


def _start(params: dict[str, Any]) -> bool:
    """Store a new session and its first refresh token, together.

    ``False``, storing nothing, if the user changed or went since the login read it.
    """
    db, statements = get_db(), _statements()
    if db.postgres:
        return db.statement(statements.start).run(params) == 1
    with db.transaction() as transaction:
        if transaction.execute(db.statement(statements.open), params) != 1:
            return False
        transaction.execute(db.statement(statements.add_token), params)
    return True


def _rotate(params: dict[str, Any]) -> bool:
    """Spend a refresh token and store its successor; ``False`` if already spent."""
    db, statements = get_db(), _statements()
    if db.postgres:
        return db.statement(statements.rotate).first(params).rotated == 1
    with db.transaction() as transaction:
        if transaction.execute(db.statement(statements.spend), params) != 1:
            return False
        transaction.execute(db.statement(statements.add_token), params)
    return True


def _refresh_token_expiry(grant: Grant, now: datetime) -> datetime:
    """A refresh token dies when idle, or with its session."""
    idle = now + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"])
    return min(idle, grant.ends_at)


@dataclass(frozen=True)
class _Statements:
    """The statements of login and refresh, each built once."""

    #: A refresh token, its session and its user, and the key set's version.
    find: Select[Any]
    #: When a refresh token was spent, after another rotation won the race.
    spent_at: Select[Any]
    #: When a refresh token expires, to hand out a successor again in the grace.
    expiry: Select[Any]
    #: A session, only for an active user still at the version the login read.
    open: Insert
    add_token: Insert
    spend: Update
    #: On PostgreSQL: ``open``, then ``add_token`` if it opened, as one statement.
    start: Insert
    #: On PostgreSQL: ``spend``, then ``add_token`` if it spent, as one statement
    #: counting what it spent.
    rotate: Select[Any]


@cache
def _statements() -> _Statements:
    # On tables rather than entities: these skip the ORM's bookkeeping. Each hot
    # write is one statement on PostgreSQL, one round trip to the server; SQLite
    # has no writes inside WITH, and no round trips to save.
    tokens, sessions = RefreshToken.__table__, AuthSession.__table__
    now = bindparam("now", type_=UTCDateTime)
    token_id = bindparam("token_id", type_=Integer)
    session_id = bindparam("session_id", type_=Uuid)
    token_hash = bindparam("token_hash", type_=String)
    expires_at = bindparam("expires_at", type_=UTCDateTime)
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
            key_set_version().label("key_version"),
        )
        .join(sessions, tokens.c.session_id == sessions.c.id)
        .join(User, sessions.c.user_id == User.id)
        .where(tokens.c.token_hash == token_hash)
    )
    users = User.__table__
    # FOR SHARE: a change of the user waits for this login's session to be
    # committed, so its revocation sweep finds it; or this waits for the change,
    # then finds the version moved on and opens nothing. SQLite's writers take
    # turns anyway, and it has no such clause.
    opening = (
        select(
            session_id,
            users.c.id,
            now,
            # Only for the version before, while instances are rolled: this
            # version reads a session's last use from its newest refresh token.
            now,
            bindparam("ends_at", type_=UTCDateTime),
            bindparam("user_agent", type_=String),
            bindparam("ip_address", type_=String),
        )
        .where(
            users.c.id == bindparam("user_id", type_=Uuid),
            users.c.account_version == bindparam("account_version", type_=Integer),
            users.c.is_active,
        )
        .with_for_update(read=True)
    )
    open_ = insert(sessions).from_select(
        [
            "id",
            "user_id",
            "created_at",
            "last_used_at",
            "expires_at",
            "user_agent",
            "ip_address",
        ],
        opening,
    )
    add_token = insert(tokens).values(
        session_id=session_id,
        token_hash=token_hash,
        created_at=now,
        expires_at=expires_at,
    )
    spend = (
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.spent_at.is_(None))
        .values(spent_at=now)
    )
    spent = spend.returning(tokens.c.session_id).cte("spent")
    rotate = (
        select(func.count().label("rotated"))
        .select_from(spent)
        .add_cte(
            insert(tokens)
            .from_select(
                ["session_id", "token_hash", "created_at", "expires_at"],
                select(spent.c.session_id, token_hash, now, expires_at),
            )
            .cte("successor")
        )
    )
    opened = open_.returning(sessions.c.id).cte("opened")
    start = insert(tokens).from_select(
        ["session_id", "token_hash", "created_at", "expires_at"],
        select(opened.c.id, token_hash, now, expires_at),
    )
    return _Statements(
        find=find,
        spent_at=select(tokens.c.spent_at).where(tokens.c.id == token_id),
        expiry=select(tokens.c.expires_at).where(tokens.c.token_hash == token_hash),
        open=open_,
        add_token=add_token,
        spend=spend,
        start=start,
        rotate=rotate,
    )


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
    query = get_db().statement(_principal_query())
    row = query.first({"session_id": session_id, "user_id": user_id}, retry=True)
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


def _issue(
    grant: Grant,
    refresh_token: str,
    refresh_expires_at: datetime,
    now: datetime,
    key_version: int | None = None,
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
        key_version=key_version,
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
            RefreshToken.token_hash == hash_opaque_token(token)
        )
    )


def _session_of_access_token(token: str) -> uuid.UUID | None:
    try:
        claims = get_keys().verify(token, now=int(clock.now().timestamp()))
        return uuid.UUID(claims.session_id)
    except (TokenError, ValueError):
        return None
