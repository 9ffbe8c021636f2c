"""Accounts: log in (the login pipeline), check and change passwords, delete.

Nothing here knows about HTTP: failures are raised as :class:`Problem` codes and
the API layer turns them into responses.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any, Protocol

from flask import current_app
from sqlalchemy import Select, String, bindparam, delete, select, update

from . import audit, clock, outbox, revocation, second_factor, sessions
from .db import get_db, get_session, rowcount
from .errors import Code, Problem
from .models import AuthSession, User
from .outbox import MessageKind
from .passwords import get_passwords
from .principal import Principal
from .registration import password_policy_problem
from .throttle import Attempt, Kind, get_throttle
from .users import (
    canonical,
    find_user,
    leaves_an_administrator,
    lock_administrators,
    named,
    why_unchanged,
)


class LoginRow(sessions.Account, Protocol):
    """What a login reads of a user: the account, its password hash and state."""

    password_hash: str
    is_active: bool
    email_verified: bool
    mfa_enabled: bool


def authenticate(user: LoginRow | None, password: str) -> LoginRow:
    """Return the login row ``user`` if it is active with ``password``.

    Otherwise raise ``invalid_credentials``. Unknown user (``None``), wrong
    password and disabled account fail alike and cost one password verification
    each, so neither the answer nor its timing tells them apart. A hash made with
    outdated parameters is redone.
    """
    if user is None:
        get_passwords().verify_dummy(password)
    elif _verify(user.id, user.password_hash, password) and user.is_active:
        return user
    audit.record("login_failed", user_id=user.id if user else None)
    raise Problem(Code.INVALID_CREDENTIALS)


def _login_row(username: str) -> LoginRow | None:
    """What a login needs of the user ``username`` names, or ``None``."""
    query = get_db().statement(_login_query())
    row: LoginRow | None = query.first({"key": canonical(username)}, retry=True)
    return row


@cache
def _login_query() -> Select[*tuple[Any, ...]]:
    # Built once and run by the driver: it is on the login path, where every
    # millisecond beside the password hash counts.
    return select(
        User.id,
        User.username,
        User.roles,
        User.password_hash,
        User.is_active,
        User.account_version,
        User.email_verified,
        User.mfa_enabled,
    ).where(named(bindparam("key", type_=String)))


def _verify(user_id: uuid.UUID, stored_hash: str, password: str) -> bool:
    passwords = get_passwords()
    result = passwords.verify(stored_hash, password)
    if result.ok and result.needs_rehash:
        # Only over the hash just verified: a password changed since then stays.
        db = get_session()
        db.execute(
            update(User)
            .where(User.id == user_id, User.password_hash == stored_hash)
            .values(password_hash=passwords.hash(password))
            .execution_options(synchronize_session=False)
        )
        db.commit()
    return result.ok


def _account_key(user_id: uuid.UUID | None, identifier: str) -> str:
    """What the per-account login limit counts: the account an identifier names.

    By id, so a username and an e-mail of one account share a counter; an
    identifier naming nobody is counted by itself, under a key of the same shape.
    """
    return f"user:{user_id}" if user_id is not None else f"name:{canonical(identifier)}"


def login(
    username: str, password: str, client: sessions.Client
) -> sessions.IssuedTokens:
    """Log in: authenticate, pass the second factor, open a session; all throttled.

    The user is looked up before the throttle counts, for every identifier, known
    or not, so both cost the same statements. A session that cannot be opened
    because the account changed meanwhile fails, and counts, like a wrong password.
    """
    user = _login_row(username)
    key = _account_key(user.id if user else None, username)
    with get_throttle().attempt(Kind.LOGIN, key, client.ip_address):
        account = authenticate(user, password)
        _verified_email(user)
        account = _second_factor(account)
        return sessions.open_session(account, client)


def _verified_email(user: LoginRow | None) -> None:
    """With ``AUTHSVC_REQUIRE_VERIFIED_EMAIL``, a right password is not enough.

    Asked only after the password was found right, so the answer tells nothing
    to whoever does not know it.
    """
    if current_app.config["REQUIRE_VERIFIED_EMAIL"] and not (
        user is not None and user.email_verified
    ):
        audit.record("login_refused_unverified", user_id=user.id if user else None)
        raise Problem(Code.EMAIL_NOT_VERIFIED)


def _second_factor(account: LoginRow) -> LoginRow:
    """The second factor, inside the login's throttle: its challenge, if it is on.

    A user with the factor gets ``mfa_required`` and an ``mfa_token`` instead of
    a session; only a right password gets here, so a wrong one reads alike for
    every account.
    """
    if account.mfa_enabled:
        second_factor.challenge(account.id)
    return account


# --- the caller's password, for the second factor's use cases ---------------


def login_attempt(user: User, address: str | None) -> Attempt:
    """A throttled attempt of the caller to prove who they are, as a login counts."""
    return get_throttle().attempt(
        Kind.LOGIN, _account_key(user.id, user.username), address
    )


def password_matches(user: User, password: str) -> bool:
    """Whether ``password`` is the user's (a failure is for the caller to raise)."""
    return _verify(user.id, user.password_hash, password)


def change_password(
    principal: Principal,
    current_password: str,
    new_password: str,
    *,
    address: str | None,
) -> None:
    """Replace the caller's password; every other session of theirs is revoked.

    A wrong current password counts as a failed login of the account.
    """
    user = find_user(principal.id)
    check_password(
        user,
        current_password,
        address=address,
        detail="The current password is incorrect.",
        event="password_change_failed",
    )
    replace_password(user, new_password, field="new_password")
    if user.email:
        # Committed with the revocations below.
        outbox.notify(MessageKind.PASSWORD_CHANGED, user.email, user.id)
    revocation.revoke_sessions(
        (AuthSession.user_id == user.id)
        & (AuthSession.id != uuid.UUID(principal.session_id)),
        reason="password_changed",
    )
    audit.record("password_changed", user_id=user.id, session_id=principal.session_id)


def replace_password(user: User, new_password: str, *, field: str) -> None:
    """Store a new password after the policy; ``field`` names it in a refusal."""
    problem = password_policy_problem(new_password, user.username)
    if problem:
        raise Problem(Code.VALIDATION_ERROR, errors={field: problem})
    now = clock.now()
    user.password_hash = get_passwords().hash(new_password)
    user.password_changed_at = user.updated_at = now
    user.account_version = User.account_version + 1
    get_session().commit()


def check_password(
    user: User,
    password: str,
    *,
    address: str | None,
    detail: str = "The password is incorrect.",
    event: str | None = None,
) -> None:
    """Refuse with ``invalid_credentials`` unless ``password`` is the user's.

    A wrong one counts as a failed login of the account (and is audited as
    ``event`` when one is named).
    """
    with login_attempt(user, address):
        if not password_matches(user, password):
            if event:
                audit.record(event, user_id=user.id)
            raise Problem(Code.INVALID_CREDENTIALS, detail)


def delete_account(principal: Principal, password: str, *, address: str | None) -> None:
    """Delete the caller's account after checking their password.

    A wrong password counts as a failed login of the account.
    """
    user = find_user(principal.id)
    check_password(user, password, address=address)
    delete_user(user)


# The one deletion, of one's own account and by an administrator alike: both obey
# the last-administrator rule of users.py, as admin.py's changes of a user do.
def delete_user(user: User) -> None:
    """Delete a user and, with them, every session and refresh token.

    Refused with ``last_admin`` if they are the last active administrator.
    """
    db = get_session()
    user_id = user.id
    lock_administrators(db)
    deleted = rowcount(
        db.execute(
            delete(User)
            .where(User.id == user_id, leaves_an_administrator(user_id))
            .execution_options(synchronize_session=False)
        )
    )
    db.commit()
    if deleted != 1:
        raise why_unchanged(user_id)
    db.expunge(user)
    audit.record("account_deleted", user_id=user_id)
