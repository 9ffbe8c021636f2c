"""Accounts: register, authenticate, change passwords, delete.

Nothing here knows about HTTP: failures are raised as :class:`Problem` codes and
the API layer turns them into responses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Protocol

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import Select, String, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, clock, outbox, second_factor, sessions, usernames
from .db import get_db, get_session, rowcount
from .errors import Code, Problem
from .models import AuthSession, User
from .outbox import MessageKind
from .passwords import get_passwords, password_problem
from .principal import Principal
from .throttle import Attempt, Kind, get_throttle
from .users import (
    canonical,
    find_user,
    leaves_an_administrator,
    lock_administrators,
    named,
    normalize,
    why_unchanged,
)

USERNAME_PATTERN = re.compile(r"[\w.-]{3,64}")
USERNAME_RULE = "must be 3 to 64 characters of letters, digits, '.', '_' and '-'"
MAX_EMAIL_LENGTH = 254
ROLE_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ROLE_RULE = "1 to 64 characters of letters, digits, '.', '_', ':' or '-'"


def register(
    username: str, password: str, email: str | None = None, *, address: str | None
) -> User:
    """Create an account after checking the username, e-mail and password policy."""
    registration_attempt(address)
    return create_user(username, password, email=email, send_verification=True)


def registration_attempt(address: str | None) -> None:
    """Refuse if registration is closed; count an attempt from ``address``.

    Every attempt counts, a refused one too: also one the API already found
    against the policy.
    """
    if current_app.config["REGISTRATION"] == "closed":
        raise Problem(Code.REGISTRATION_CLOSED)
    get_throttle().attempt(Kind.REGISTRATION, address)


def create_user(
    username: str,
    password: str,
    *,
    email: str | None = None,
    roles: list[str] | None = None,
    send_verification: bool = False,
) -> User:
    """Insert a user; the same policy for the API and the command line.

    With ``send_verification``, an address gets its verification message, queued
    in the same transaction.
    """
    username = normalize(username)
    email = normalize(email) if email is not None else None
    errors = _registration_errors(username, password, email)
    errors.update(roles_errors(roles or []))
    if errors:
        raise Problem(Code.VALIDATION_ERROR, errors=errors)
    now = clock.now()
    user = User(
        id=uuid.uuid4(),
        username=username,
        username_key=canonical(username),
        username_skeleton=usernames.skeleton(canonical(username)),
        email=email,
        email_key=canonical(email) if email else None,
        password_hash=get_passwords().hash(password),
        is_active=True,
        roles=sorted(set(roles or [])),
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    db = get_session()
    db.add(user)
    if send_verification and email:
        outbox.queue(MessageKind.VERIFY, email, user.id)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        # Also the unique skeleton: a name that looks like a taken one is taken.
        raise Problem(
            Code.ALREADY_EXISTS, "The username or e-mail is already taken."
        ) from None
    audit.record("user_created", user_id=user.id)
    return user


def _registration_errors(
    username: str, password: str, email: str | None
) -> dict[str, str]:
    errors = {}
    if problem := _username_problem(username):
        errors["username"] = problem
    if email is not None and not is_valid_email(email):
        errors["email"] = "must be a valid e-mail address"
    problem = _password_problem(password, username)
    if problem:
        errors["password"] = problem
    return errors


def _username_problem(username: str) -> str | None:
    # The Unicode rules come first, so a name with a hidden character says so.
    if problem := usernames.username_problem(username):
        return problem
    # Case folding can lengthen a name ("ß" is "ss"), so the key is checked too.
    if not USERNAME_PATTERN.fullmatch(username) or len(canonical(username)) > 64:
        return USERNAME_RULE
    return None


def is_valid_email(email: str) -> bool:
    """Whether ``email`` is an address of a valid form (no DNS look-up)."""
    # Syntax only: no DNS look-up, no quoted local parts, no IP-address domains.
    # What is stored stays the NFKC form the caller gave, as before.
    if len(canonical(email)) > MAX_EMAIL_LENGTH:
        return False
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def roles_errors(roles: Sequence[str]) -> dict[str, str]:
    """What is wrong with a set of roles: one rule for creation and administration."""
    if all(ROLE_PATTERN.fullmatch(role) for role in roles):
        return {}
    return {"roles": f"each role must be {ROLE_RULE}"}


def _password_problem(password: str, username: str) -> str | None:
    min_length = current_app.config["PASSWORD_MIN_LENGTH"]
    return password_problem(password, username=username, min_length=min_length)


def registration_errors(fields: Mapping[str, object]) -> dict[str, str]:
    """What the policy finds wrong with a registration's text fields, all at once.

    For a body whose other fields already failed their schema, so that one answer
    names every invalid field; fields that are not text are left to the schema.
    """
    username, password, email = (fields.get(name) for name in REGISTRATION_FIELDS)
    errors = _registration_errors(
        normalize(username) if isinstance(username, str) else "",
        password if isinstance(password, str) else "",
        normalize(email) if isinstance(email, str) else None,
    )
    return {
        name: message
        for name, message in errors.items()
        if isinstance(fields.get(name), str)
    }


REGISTRATION_FIELDS = ("username", "password", "email")


def new_password_errors(
    password: object, *, username: str, field: str
) -> dict[str, str]:
    """What the policy finds wrong with a new password, under its field's name."""
    if not isinstance(password, str):
        return {}
    problem = _password_problem(password, username)
    return {field: problem} if problem else {}


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
    key = _account_key(user.id, user.username)
    with get_throttle().attempt(Kind.LOGIN, key, address):
        if not _verify(user.id, user.password_hash, current_password):
            audit.record("password_change_failed", user_id=user.id)
            raise Problem(
                Code.INVALID_CREDENTIALS, "The current password is incorrect."
            )
    replace_password(user, new_password, field="new_password")
    if user.email:
        # Committed with the revocations below.
        outbox.notify(MessageKind.PASSWORD_CHANGED, user.email, user.id)
    sessions.revoke_sessions(
        (AuthSession.user_id == user.id)
        & (AuthSession.id != uuid.UUID(principal.session_id)),
        reason="password_changed",
    )
    audit.record("password_changed", user_id=user.id, session_id=principal.session_id)


def replace_password(user: User, new_password: str, *, field: str) -> None:
    """Store a new password after the policy; ``field`` names it in a refusal."""
    problem = _password_problem(new_password, user.username)
    if problem:
        raise Problem(Code.VALIDATION_ERROR, errors={field: problem})
    now = clock.now()
    user.password_hash = get_passwords().hash(new_password)
    user.password_changed_at = user.updated_at = now
    user.account_version = User.account_version + 1
    get_session().commit()


def check_password(user: User, password: str, *, address: str | None) -> None:
    """Refuse with ``invalid_credentials`` unless ``password`` is the user's.

    A wrong one counts as a failed login of the account.
    """
    key = _account_key(user.id, user.username)
    with get_throttle().attempt(Kind.LOGIN, key, address):
        if not _verify(user.id, user.password_hash, password):
            raise Problem(Code.INVALID_CREDENTIALS, "The password is incorrect.")


def delete_account(principal: Principal, password: str, *, address: str | None) -> None:
    """Delete the caller's account after checking their password.

    A wrong password counts as a failed login of the account.
    """
    user = find_user(principal.id)
    key = _account_key(user.id, user.username)
    with get_throttle().attempt(Kind.LOGIN, key, address):
        if not _verify(user.id, user.password_hash, password):
            raise Problem(Code.INVALID_CREDENTIALS, "The password is incorrect.")
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
