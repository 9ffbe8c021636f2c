"""Fresh authentication (RFC 9470 step-up): prove who you are again, same session.

``POST /reauthenticate`` takes the password, and a code when the user has a
second factor; the session's ``auth_time`` becomes now (and its level ``aal2``
after a code), and a new access token says so. The refresh token stays. Nothing
here knows about HTTP.
"""

from __future__ import annotations

from flask import current_app

from . import audit, sessions
from .accounts import login_attempt, password_matches
from .bearer import insufficient_user_authentication
from .errors import Code, Problem
from .mfa import spend_code
from .principal import Principal
from .users import find_user


def reauthenticate(
    principal: Principal, password: str, code: str | None, *, address: str | None
) -> sessions.IssuedAccess:
    """Check the caller's password (and code) again; a fresh access token.

    A user with a second factor who sends no code is asked for one
    (``insufficient_user_authentication`` with ``acr_values``). Wrong passwords
    and codes count as failed logins of the account.
    """
    user = find_user(principal.id)
    with login_attempt(user, address):
        if not password_matches(user, password):
            audit.record("reauthentication_failed", user_id=user.id)
            raise Problem(Code.INVALID_CREDENTIALS, "The password is incorrect.")
        assurance = sessions.PASSWORD
        if user.mfa_enabled:
            if code is None:
                raise insufficient_user_authentication(
                    int(current_app.config["FRESH_AUTH_MAX_AGE"]),
                    "aal2",
                    "A code of the second factor is needed as well.",
                )
            if not spend_code(user, code):
                audit.record("reauthentication_failed", user_id=user.id)
                raise Problem(Code.INVALID_MFA_CODE)
            assurance = sessions.SECOND_FACTOR
    return sessions.reauthenticated(principal, assurance)
