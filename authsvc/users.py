"""Users: finding them, and the rule that an active administrator remains.

Users are found by id, or by a username or e-mail compared through its canonical
key. Every change that could take away the last active administrator (deleting,
disabling, taking the role away) locks the administrators with
:func:`lock_administrators` and is refused with ``last_admin`` by the statement
that makes it, through :func:`leaves_an_administrator`. Nothing here knows about
HTTP.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from sqlalchemy import ColumnElement, cast, exists, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from .db import get_db, get_session
from .errors import Code, Problem
from .models import User

#: The role of those who administer users; the service always keeps one active.
ADMIN_ROLE = "admin"


def normalize(value: str) -> str:
    """NFKC-normalise what a person typed, keeping its case."""
    return unicodedata.normalize("NFKC", value).strip()


def canonical(value: str) -> str:
    """The key under which names compare: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", normalize(value).casefold())


def find_user(user_id: str) -> User:
    """Return the user with this public id, or raise ``not_found``."""
    return _user(user_id)


def find_user_by_name(username: str) -> User:
    """Return the user with this username or e-mail, or raise ``not_found``."""
    user = _user_named(username)
    if user is None:
        raise Problem(Code.NOT_FOUND, "No such user.")
    return user


def _user_named(username: str) -> User | None:
    return get_session().scalar(select(User).where(named(canonical(username))))


def named(key: Any) -> ColumnElement[bool]:
    """Whose username or e-mail has ``key`` as its canonical form."""
    return or_(User.username_key == key, User.email_key == key)


def _user(user_id: str | uuid.UUID) -> User:
    try:
        key = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(user_id)
    except ValueError:
        raise Problem(Code.NOT_FOUND, "No such user.") from None
    user = get_session().get(User, key)
    if user is None:
        raise Problem(Code.NOT_FOUND, "No such user.")
    return user


def _active_admin(user: Any) -> ColumnElement[bool]:
    """Whether ``user`` (the users table or an alias of it) is an active admin."""
    if get_db().postgres:
        # The column is JSON; as JSONB it has containment, which is exact.
        is_admin = cast(user.roles, JSONB).contains([ADMIN_ROLE])
    else:
        role = func.json_each(user.roles).table_valued("value")
        is_admin = exists().where(role.c.value == ADMIN_ROLE)
    active: ColumnElement[bool] = user.is_active & is_admin
    return active


def leaves_an_administrator(user_id: uuid.UUID) -> ColumnElement[bool]:
    """Whether the service keeps an active administrator without this user as one."""
    other = aliased(User)
    return ~_active_admin(User) | exists().where(
        other.id != user_id, _active_admin(other)
    )


def lock_administrators(db: Session) -> None:
    """Make changes that may take away an administrator take turns.

    On PostgreSQL, two requests each taking away one of the last two
    administrators would each still see the other; locking every active
    administrator's row first makes the second wait and then see the first's
    change. SQLite's writers take turns anyway.
    """
    if get_db().postgres:
        db.execute(
            select(User.id)
            .where(_active_admin(User))
            .order_by(User.id)
            .with_for_update(key_share=True)
        )


def why_unchanged(user_id: uuid.UUID) -> Problem:
    """Why a change of this user's row changed nothing: gone, or the last admin."""
    if get_session().scalar(select(User.id).where(User.id == user_id)) is None:
        return Problem(Code.NOT_FOUND, "No such user.")
    return Problem(Code.LAST_ADMIN)
