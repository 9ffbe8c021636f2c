"""Who the caller is: the user and live session an access token names.

Read on every authenticated request, in one prebuilt query. Nothing here knows
about HTTP: failures are raised as :class:`Problem` codes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from flask_login import UserMixin
from sqlalchemy import Select, bindparam, select

from . import clock
from .db import get_db
from .errors import Code, Problem
from .models import AuthSession, User
from .tokens import AccessClaims


@dataclass(frozen=True)
class Principal(UserMixin):
    """The authenticated caller: a user seen through one live session."""

    id: str
    username: str
    email: str | None
    email_verified: bool
    roles: list[str]
    mfa_enabled: bool
    created_at: datetime
    session_id: str


def load_principal(claims: AccessClaims) -> Principal:
    """Load the user and session an access token names, in one query.

    Raises ``invalid_token`` when either is gone or the user is disabled, and
    ``token_revoked`` when the session was revoked or has ended.
    """
    try:
        user_id, session_id = uuid.UUID(claims.subject), uuid.UUID(claims.session_id)
    except ValueError:
        raise Problem(Code.INVALID_TOKEN) from None
    query = get_db().statement(_principal_query())
    row = query.first({"session_id": session_id, "user_id": user_id}, retry=True)
    if row is None or not row.is_active:
        raise Problem(Code.INVALID_TOKEN)
    if row.revoked_at is not None or row.expires_at <= clock.now():
        raise Problem(Code.TOKEN_REVOKED)
    return Principal(
        id=claims.subject,
        username=row.username,
        email=row.email,
        email_verified=row.email_verified,
        roles=list(row.roles),
        mfa_enabled=row.mfa_enabled,
        created_at=row.created_at,
        session_id=claims.session_id,
    )


@cache
def _principal_query() -> Select[*tuple[Any, ...]]:
    # Built once: the hot path then skips SQLAlchemy's statement construction and
    # goes straight to its compiled-statement cache.
    return (
        select(
            User.username,
            User.email,
            User.email_verified,
            User.roles,
            User.mfa_enabled,
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
