"""The second factor's use cases: enrol, confirm, renew, disable, reset, log in.

Each step that proves who the caller is (their password, a code) counts as a
login attempt of their account when it fails, so guessing codes is throttled
like guessing passwords. Nothing here knows about HTTP: failures are raised as
:class:`Problem` codes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app
from sqlalchemy.orm import Session

from . import audit, otp, revocation, second_factor, sessions
from .accounts import login_attempt, password_matches
from .db import get_session
from .errors import Code, Problem
from .models import AuthSession, User
from .principal import Principal
from .users import find_user

T = TypeVar("T")


@dataclass(frozen=True)
class Status:
    """What ``GET /me/mfa`` tells."""

    enabled: bool
    recovery_codes_left: int


@dataclass(frozen=True)
class Enrolment:
    """A pending factor: the secret to put in an authenticator app, and its URI."""

    secret: str
    otpauth_uri: str


def status(principal: Principal) -> Status:
    """Whether the caller's factor is on, and how many recovery codes are left."""
    # The flag came with the caller's own query; only the count needs one.
    enabled = principal.mfa_enabled
    left = second_factor.recovery_codes_left(uuid.UUID(principal.id)) if enabled else 0
    return Status(enabled, left)


def enrol(principal: Principal, password: str, *, address: str | None) -> Enrolment:
    """Start (or restart) the enrolment of a TOTP factor, after the password.

    The factor stays pending, and off, until :func:`confirm` sees its first code.
    """
    user = find_user(principal.id)
    _check_password(user, password, address)
    if user.mfa_enabled:
        raise Problem(Code.MFA_ALREADY_ENABLED)
    secret = second_factor.begin_enrolment(user.id)
    audit.record("mfa_enrolment_started", user_id=user.id)
    uri = otp.provisioning_uri(
        secret, username=user.username, issuer=current_app.config["TOTP_ISSUER"]
    )
    return Enrolment(secret, uri)


def confirm(principal: Principal, code: str, *, address: str | None) -> list[str]:
    """Turn the pending factor on with its first code; return the recovery codes.

    Every other session of the user is revoked, and the caller's counts as
    ``aal2`` from its next token on. A wrong code counts as a failed login.
    """
    user = find_user(principal.id)
    session_id = uuid.UUID(principal.session_id)
    db = get_session()
    with login_attempt(user, address):
        second_factor.confirm_enrolment(db, user.id, code)
        codes = second_factor.replace_recovery_codes(db, user.id)
        sessions.raise_assurance(session_id, sessions.SECOND_FACTOR)
        # Before the attempt ends: SQLite's counters wait for this writer.
        db.commit()
    audit.record("mfa_enabled", user_id=user.id, session_id=session_id)
    revocation.revoke_sessions(
        (AuthSession.user_id == user.id) & (AuthSession.id != session_id),
        reason="mfa_enabled",
    )
    return codes


def renew_recovery_codes(
    principal: Principal, password: str, code: str, *, address: str | None
) -> list[str]:
    """Ten new recovery codes, after the password and a code; the old ones die."""
    user = find_user(principal.id)
    codes = _after_password_and_code(
        user, password, code, address, second_factor.replace_recovery_codes
    )
    audit.record("mfa_recovery_codes_renewed", user_id=user.id)
    return codes


def disable(
    principal: Principal, password: str, code: str, *, address: str | None
) -> None:
    """Turn the caller's factor off, after the password and a code."""
    user = find_user(principal.id)
    _after_password_and_code(user, password, code, address, _remove)
    audit.record("mfa_disabled", user_id=user.id, session_id=principal.session_id)


def _remove(db: Session, user_id: uuid.UUID) -> None:
    if not second_factor.remove(db, user_id):
        raise Problem(Code.MFA_NOT_ENABLED)


def reset(user: User) -> None:
    """Turn a user's factor off for them (a lost phone); every session ends.

    ``mfa_not_enabled`` when it is not on. For administrators and the CLI.
    """
    db = get_session()
    if not second_factor.remove(db, user.id):
        db.rollback()
        raise Problem(Code.MFA_NOT_ENABLED)
    db.commit()
    db.refresh(user)
    audit.record("mfa_reset", user_id=user.id)
    revocation.revoke_user_sessions(user.id, reason="mfa_reset")


def log_in_with_code(
    mfa_token: str, code: str, client: sessions.Client
) -> sessions.IssuedTokens:
    """Finish a login: the mfa_token of the password step and a code; a session.

    A wrong code counts as a failed login of the account and towards burning
    the mfa_token; the right one spends both the code and the token together.
    """
    challenge = second_factor.live_challenge(mfa_token)
    user = find_user(str(challenge.user_id))
    if not user.is_active:
        raise Problem(Code.INVALID_MFA_TOKEN)
    db = get_session()
    with login_attempt(user, client.ip_address):
        used = second_factor.accept_code(db, user.id, code)
        if used is None:
            db.rollback()
            second_factor.count_wrong_code(challenge)
            audit.record("login_failed", user_id=user.id, reason="mfa_code")
            raise Problem(Code.INVALID_MFA_CODE)
        if not second_factor.spend_challenge(db, challenge):
            db.rollback()
            raise Problem(Code.INVALID_MFA_TOKEN)
        db.commit()
        _note_recovery_code(used, user.id)
        return sessions.open_session(user, client, sessions.SECOND_FACTOR)


def _check_password(user: User, password: str, address: str | None) -> None:
    with login_attempt(user, address):
        if not password_matches(user, password):
            audit.record("mfa_password_failed", user_id=user.id)
            raise Problem(Code.INVALID_CREDENTIALS, "The password is incorrect.")


def _after_password_and_code(
    user: User,
    password: str,
    code: str,
    address: str | None,
    change: Callable[[Session, uuid.UUID], T],
) -> T:
    """Make ``change`` after the password and a code of the factor, all at once.

    The code is spent in the same transaction as the change; a wrong password
    or code counts as a failed login.
    """
    if not user.mfa_enabled:
        # Still a proof of the password first: the answer says nothing before it.
        _check_password(user, password, address)
        raise Problem(Code.MFA_NOT_ENABLED)
    db = get_session()
    with login_attempt(user, address):
        if not password_matches(user, password):
            raise Problem(Code.INVALID_CREDENTIALS, "The password is incorrect.")
        used = second_factor.accept_code(db, user.id, code)
        if used is None:
            db.rollback()
            raise Problem(Code.INVALID_MFA_CODE)
        try:
            result = change(db, user.id)
        except Problem:
            db.rollback()
            raise
        # Before the attempt ends: SQLite's counters wait for this writer.
        db.commit()
    _note_recovery_code(used, user.id)
    return result


def spend_code(user: User, code: str) -> bool:
    """Spend a code of the user's factor now, committed; ``False`` if it is wrong."""
    db = get_session()
    used = second_factor.accept_code(db, user.id, code)
    if used is None:
        db.rollback()
        return False
    db.commit()
    _note_recovery_code(used, user.id)
    return True


def _note_recovery_code(used: str, user_id: uuid.UUID) -> None:
    if used == "recovery":
        audit.record(
            "mfa_recovery_code_used",
            user_id=user_id,
            left=second_factor.recovery_codes_left(user_id),
        )


def prune_challenges() -> int:
    """Delete mfa_tokens that expired over a day ago; return how many."""
    return second_factor.prune_challenges()
