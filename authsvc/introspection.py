"""Tokens seen by other services: introspection (RFC 7662) and revocation (RFC 7009).

Nothing here knows about HTTP: the API layer checks the caller and shapes the
answers.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from . import clock
from .db import get_session
from .errors import Problem
from .keys import get_keys
from .models import AuthSession, RefreshToken
from .principal import load_principal
from .revocation import revoke_sessions
from .tokens import AccessClaims, TokenError, hash_opaque_token


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
        **_authentication(claims),
    }


def _authentication(claims: AccessClaims) -> dict[str, object]:
    """When and how the user authenticated, as the token says (RFC 9068 2.2.1)."""
    found = {
        "auth_time": claims.auth_time,
        "acr": claims.acr,
        "amr": list(claims.amr) if claims.amr is not None else None,
    }
    # A token signed before the service issued them has none to tell.
    return {name: value for name, value in found.items() if value is not None}


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
