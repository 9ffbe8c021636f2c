"""Sessions: open one at login, rotate its refresh tokens, authenticate again.

The rules are RFC 9700's: a refresh token is spent by its one rotation, a token
presented again after its grace window is reuse and ends its whole session, and
no token outlives its session. Nothing here knows about HTTP: failures are
raised as :class:`Problem` codes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from flask import Flask, current_app
from sqlalchemy import update

from . import audit, clock, session_store
from .db import get_session
from .errors import Code, Problem
from .keys import get_keys
from .models import AuthSession
from .principal import Principal
from .revocation import revoke_sessions
from .tokens import derive_key, hash_opaque_token, new_opaque_token
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
class Assurance:
    """How a user proved who they are: RFC 9068's ``acr`` and ``amr`` claims."""

    acr: str
    #: RFC 8176 method names.
    amr: tuple[str, ...]


#: A password alone.
PASSWORD = Assurance("aal1", ("pwd",))
#: A password and a one-time code (TOTP or recovery code).
SECOND_FACTOR = Assurance("aal2", ("pwd", "otp", "mfa"))


@dataclass(frozen=True)
class Grant:
    """Whom a session's tokens are for: all that issuing them needs to know."""

    user_id: uuid.UUID
    username: str
    roles: list[str]
    session_id: uuid.UUID
    #: The session's absolute end, which no token outlives.
    ends_at: datetime
    #: When and how the user last authenticated in the session.
    auth_time: datetime
    assurance: Assurance


class Account(Protocol):
    """Whom a session is opened for: a stored user, or a row read for login."""

    id: uuid.UUID
    username: str
    roles: list[str]
    #: The user's ``account_version`` when their credentials were checked.
    account_version: int


def open_session(
    user: Account, client: Client, assurance: Assurance = PASSWORD
) -> IssuedTokens:
    """Start a session for ``user`` and issue its first tokens.

    ``assurance`` says how the user authenticated, now. The session is opened
    only if the user is still active and still at the ``account_version`` read
    when their credentials were checked: a password change, a disabling or a
    deletion that raced the login leaves no session behind, and the login fails
    as ``invalid_credentials``.
    """
    now = clock.now()
    grant = Grant(
        user.id,
        user.username,
        list(user.roles),
        uuid.uuid4(),
        now + timedelta(seconds=current_app.config["SESSION_TTL"]),
        now,
        assurance,
    )
    refresh_token = new_opaque_token()
    params: dict[str, Any] = {
        "session_id": grant.session_id,
        "user_id": user.id,
        "account_version": user.account_version,
        "now": now,
        "ends_at": grant.ends_at,
        "user_agent": (client.user_agent or None) and client.user_agent[:512],
        "ip_address": client.ip_address,
        "token_hash": hash_opaque_token(refresh_token),
        "expires_at": _refresh_token_expiry(grant, now),
        "auth_time": now,
        "acr": assurance.acr,
        "amr": list(assurance.amr),
    }
    if not session_store.start(params):
        audit.record("login_failed", user_id=user.id)
        raise Problem(Code.INVALID_CREDENTIALS)
    audit.record("login_succeeded", user_id=user.id, session_id=grant.session_id)
    return _issue(grant, refresh_token, params["expires_at"], now)


def refresh(refresh_token: str) -> IssuedTokens:
    """Rotate a refresh token: spend it and hand out its successor.

    The spend is one conditional UPDATE, so of any number of concurrent callers
    exactly one rotates. The others, and anyone presenting the token again within
    the grace window, receive the same successor; later presentations are reuse
    and revoke the whole session.
    """
    keys = get_keys()
    now = clock.now()
    # Read outside the transaction: the conditional spend below decides races.
    # The key set's version comes along, so signing needs no query of its own.
    found = session_store.find(hash_opaque_token(refresh_token), keys.algorithm)
    if found is None:
        raise Problem(Code.INVALID_REFRESH_TOKEN)
    grant = Grant(
        found.user_id,
        found.username,
        found.roles,
        found.session_id,
        found.ends_at,
        found.auth_time,
        Assurance(found.acr, tuple(found.amr)),
    )
    # None when no key is stored yet: the ring makes the first as it loads.
    key_version = found.key_version or 0
    if not (found.is_active and found.revoked_at is None and grant.ends_at > now):
        raise Problem(Code.INVALID_REFRESH_TOKEN)
    successor = successor_of(_refresh_key(), refresh_token)
    spent_at = found.spent_at
    if spent_at is None:
        if found.expires_at <= now:
            raise Problem(Code.INVALID_REFRESH_TOKEN)
        params = {
            "token_id": found.token_id,
            "session_id": grant.session_id,
            "now": now,
            "token_hash": hash_opaque_token(successor),
            "expires_at": _refresh_token_expiry(grant, now),
        }
        if session_store.rotate(params):
            audit.record(
                "refreshed", user_id=grant.user_id, session_id=grant.session_id
            )
            return _issue(grant, successor, params["expires_at"], now, key_version)
        spent_at = session_store.spent_at(params)
    grace = current_app.config["REFRESH_REUSE_GRACE"]
    in_grace = spent_at is not None and now - spent_at <= timedelta(seconds=grace)
    if grace > 0 and in_grace:
        expires_at = session_store.expiry(hash_opaque_token(successor))
        if expires_at is not None:
            return _issue(grant, successor, expires_at, now, key_version)
    audit.record(
        "refresh_reuse_detected", user_id=grant.user_id, session_id=grant.session_id
    )
    revoke_sessions(AuthSession.id == grant.session_id, reason="refresh_reuse")
    raise Problem(Code.INVALID_REFRESH_TOKEN)


def _refresh_token_expiry(grant: Grant, now: datetime) -> datetime:
    """A refresh token dies when idle, or with its session."""
    idle = now + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"])
    return min(idle, grant.ends_at)


def _issue(
    grant: Grant,
    refresh_token: str,
    refresh_expires_at: datetime,
    now: datetime,
    key_version: int | None = None,
) -> IssuedTokens:
    access = _access_token(grant, now, key_version)
    return IssuedTokens(
        access_token=access.access_token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
        refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
        session_id=str(grant.session_id),
    )


@dataclass(frozen=True)
class IssuedAccess:
    """An access token alone, as a reauthentication hands it back."""

    access_token: str
    expires_in: int


def _access_token(
    grant: Grant, now: datetime, key_version: int | None = None
) -> IssuedAccess:
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
        auth_time=int(grant.auth_time.timestamp()),
        acr=grant.assurance.acr,
        amr=grant.assurance.amr,
    )
    return IssuedAccess(access_token, expires_at - issued_at)


def reauthenticated(principal: Principal, assurance: Assurance) -> IssuedAccess:
    """Record that the caller just authenticated again; a fresh access token.

    The session's ``auth_time`` becomes now, and its later refreshes carry it;
    its refresh token stays as it is. A session revoked or ended meanwhile
    issues nothing (``token_revoked``).
    """
    now = clock.now()
    session_id = uuid.UUID(principal.session_id)
    db = get_session()
    ends_at = db.scalar(
        update(AuthSession)
        .where(
            AuthSession.id == session_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
        .values(auth_time=now, acr=assurance.acr, amr=list(assurance.amr))
        .returning(AuthSession.expires_at)
    )
    db.commit()
    if ends_at is None:
        raise Problem(Code.TOKEN_REVOKED)
    grant = Grant(
        uuid.UUID(principal.id),
        principal.username,
        list(principal.roles),
        session_id,
        ends_at,
        now,
        assurance,
    )
    audit.record(
        "reauthenticated",
        user_id=principal.id,
        session_id=principal.session_id,
        acr=assurance.acr,
    )
    return _access_token(grant, now)


def raise_assurance(session_id: uuid.UUID, assurance: Assurance) -> None:
    """Count the session as authenticated at ``assurance`` from its next token on.

    Uncommitted: it belongs to the caller's change (a factor turned on).
    """
    get_session().execute(
        update(AuthSession)
        .where(AuthSession.id == session_id)
        .values(acr=assurance.acr, amr=list(assurance.amr))
        .execution_options(synchronize_session=False)
    )
