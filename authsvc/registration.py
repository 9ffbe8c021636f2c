"""Registration: the rules a new account obeys, and creating one.

One policy for the API and the command line: usernames (Unicode TR39 too),
e-mail addresses, passwords and roles, every fault reported at once. Nothing
here knows about HTTP: failures are raised as :class:`Problem` codes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.exc import IntegrityError

from . import audit, clock, outbox, usernames
from .db import get_session
from .errors import Code, Problem
from .models import User
from .outbox import MessageKind
from .passwords import get_passwords, password_problem
from .throttle import Kind, get_throttle
from .users import canonical, normalize

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
    problem = password_policy_problem(password, username)
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


def password_policy_problem(password: str, username: str) -> str | None:
    """What the password policy finds wrong with ``password``, or ``None``."""
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
    problem = password_policy_problem(password, username)
    return {field: problem} if problem else {}
