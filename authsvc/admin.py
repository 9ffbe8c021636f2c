"""Administration: list users, enable or disable them, set roles and passwords.

Every change that could take away the last active administrator is refused with
``last_admin`` by the statement that makes it (the rule is in ``users``).
Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, true, update

from . import audit, clock, revocation
from .accounts import replace_password
from .db import get_session, rowcount
from .errors import Code, Problem
from .models import User
from .registration import roles_errors
from .users import (
    ADMIN_ROLE,
    canonical,
    leaves_an_administrator,
    lock_administrators,
    why_unchanged,
)


def list_users(
    query: str = "", *, page: int = 1, per_page: int = 50
) -> tuple[list[User], int]:
    """A page of users whose username or e-mail contains ``query``, and the total."""
    condition: ColumnElement[bool] = true()
    if query:
        key = canonical(query)
        condition = or_(
            User.username_key.contains(key, autoescape=True),
            User.email_key.contains(key, autoescape=True),
        )
    db = get_session()
    total = db.scalar(select(func.count()).select_from(User).where(condition))
    users = db.scalars(
        select(User)
        .where(condition)
        .order_by(User.username_key)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    return list(users), total or 0


def update_user(
    user: User, *, is_active: bool | None = None, roles: Sequence[str] | None = None
) -> None:
    """Apply an administrator's changes together, or none of them.

    Disabling a user or changing their roles ends their sessions; a change that
    would leave no active administrator is refused with ``last_admin``.
    """
    if roles is not None and (errors := roles_errors(roles)):
        raise Problem(Code.VALIDATION_ERROR, errors=errors)
    changes: dict[str, Any] = {}
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = is_active
    if roles is not None and sorted(set(roles)) != user.roles:
        changes["roles"] = sorted(set(roles))
    if changes:
        _apply(user, changes)
    if is_active is not None:
        if not is_active:
            revocation.revoke_user_sessions(user.id, reason="disabled")
        event = "account_enabled" if is_active else "account_disabled"
        audit.record(event, user_id=user.id)
    if "roles" in changes:
        revocation.revoke_user_sessions(user.id, reason="roles_changed")
        audit.record("roles_changed", user_id=user.id, roles=",".join(user.roles))


def set_active(user: User, active: bool) -> None:
    """Enable or disable an account; disabling ends every session at once."""
    update_user(user, is_active=active)


def set_roles(user: User, roles: Sequence[str]) -> None:
    """Replace a user's roles; their sessions end so new tokens carry the new roles."""
    update_user(user, roles=roles)


def _apply(user: User, changes: dict[str, Any]) -> None:
    """Write ``changes`` to the user in one statement, moving their account version.

    One that takes away an active administrator is made only if another remains,
    checked by the same statement.
    """
    db = get_session()
    conditions = [User.id == user.id]
    if changes.get("is_active") is False or ADMIN_ROLE not in changes.get(
        "roles", [ADMIN_ROLE]
    ):
        lock_administrators(db)
        conditions.append(leaves_an_administrator(user.id))
    changed = rowcount(
        db.execute(
            update(User)
            .where(*conditions)
            .values(
                **changes,
                updated_at=clock.now(),
                account_version=User.account_version + 1,
            )
            .execution_options(synchronize_session=False)
        )
    )
    db.commit()
    if changed != 1:
        raise why_unchanged(user.id)
    db.refresh(user)


def set_password(user: User, new_password: str) -> None:
    """Replace a user's password (administration); all their sessions end."""
    replace_password(user, new_password, field="password")
    revocation.revoke_user_sessions(user.id, reason="password_changed")
    audit.record("password_changed", user_id=user.id)
