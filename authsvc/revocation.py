"""Ending sessions: logout, revocation (one, a user's, any that match), pruning.

A revoked session ends at once: its access tokens fail the per-request check
and its refresh tokens are refused. Also the caller's list of live sessions,
the ones they may end. Nothing here knows about HTTP.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, select, update

from . import audit, clock
from .db import get_session
from .errors import Code, Problem
from .models import AuthSession, RefreshToken
from .principal import Principal


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
        raise Problem(Code.NOT_FOUND, "No such session.") from None
    condition = (
        (AuthSession.id == key)
        & (AuthSession.user_id == uuid.UUID(principal.id))
        & (AuthSession.expires_at > clock.now())
    )
    if not revoke_sessions(condition, reason="revoked_by_user"):
        raise Problem(Code.NOT_FOUND, "No such session.")


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
