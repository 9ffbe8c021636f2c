"""The session store: the prebuilt statements of login and refresh, both dialects.

Login and refresh run on every session's hot path, so their statements are built
once and run straight on the driver. On PostgreSQL each write is one statement,
one round trip; SQLite has no writes inside WITH, and takes them in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Update,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    update,
)

from .db import UTCDateTime, get_db
from .key_store import key_set_version
from .models import AuthSession, RefreshToken, User


def find(token_hash: str, key_algorithm: str) -> Any:
    """A refresh token with its session, its user and the key set's version.

    ``None`` if no token has that hash. Read outside any transaction: the
    conditional spend of :func:`rotate` decides races.
    """
    return (
        get_db()
        .statement(_statements().find)
        .first({"token_hash": token_hash, "key_algorithm": key_algorithm}, retry=True)
    )


def start(params: Mapping[str, Any]) -> bool:
    """Store a new session and its first refresh token, together.

    ``False``, storing nothing, if the user changed or went since the login read it.
    """
    db, built = get_db(), _statements()
    if db.postgres:
        return db.statement(built.start).run(params) == 1
    with db.transaction() as transaction:
        if transaction.execute(db.statement(built.open), params) != 1:
            return False
        transaction.execute(db.statement(built.add_token), params)
    return True


def rotate(params: Mapping[str, Any]) -> bool:
    """Spend a refresh token and store its successor; ``False`` if already spent."""
    db, built = get_db(), _statements()
    if db.postgres:
        rotated: int = db.statement(built.rotate).first(params).rotated
        return rotated == 1
    with db.transaction() as transaction:
        if transaction.execute(db.statement(built.spend), params) != 1:
            return False
        transaction.execute(db.statement(built.add_token), params)
    return True


def spent_at(params: Mapping[str, Any]) -> datetime | None:
    """When the refresh token ``token_id`` was spent, by whichever rotation won."""
    row = get_db().statement(_statements().spent_at).first(params, retry=True)
    spent: datetime | None = row.spent_at
    return spent


def expiry(token_hash: str) -> datetime | None:
    """When the refresh token with this hash expires, or ``None`` if none is stored."""
    row = (
        get_db()
        .statement(_statements().expiry)
        .first({"token_hash": token_hash}, retry=True)
    )
    if row is None:
        return None
    expires_at: datetime = row.expires_at
    return expires_at


@dataclass(frozen=True)
class _Statements:
    """The statements of login and refresh, each built once."""

    #: A refresh token, its session and its user, and the key set's version.
    find: Select[Any]
    #: When a refresh token was spent, after another rotation won the race.
    spent_at: Select[Any]
    #: When a refresh token expires, to hand out a successor again in the grace.
    expiry: Select[Any]
    #: A session, only for an active user still at the version the login read.
    open: Insert
    add_token: Insert
    spend: Update
    #: On PostgreSQL: ``open``, then ``add_token`` if it opened, as one statement.
    start: Insert
    #: On PostgreSQL: ``spend``, then ``add_token`` if it spent, as one statement
    #: counting what it spent.
    rotate: Select[Any]


@cache
def _statements() -> _Statements:
    # On tables rather than entities: these skip the ORM's bookkeeping. Each hot
    # write is one statement on PostgreSQL, one round trip to the server; SQLite
    # has no writes inside WITH, and no round trips to save.
    tokens = cast(Table, RefreshToken.__table__)
    sessions = cast(Table, AuthSession.__table__)
    now = bindparam("now", type_=UTCDateTime)
    token_id = bindparam("token_id", type_=Integer)
    session_id = bindparam("session_id", type_=Uuid)
    token_hash = bindparam("token_hash", type_=String)
    expires_at = bindparam("expires_at", type_=UTCDateTime)
    find = (
        select(
            tokens.c.id.label("token_id"),
            tokens.c.expires_at,
            tokens.c.spent_at,
            sessions.c.id.label("session_id"),
            sessions.c.revoked_at,
            sessions.c.expires_at.label("ends_at"),
            # Null only for a session the version before opened: its login.
            func.coalesce(sessions.c.auth_time, sessions.c.created_at).label(
                "auth_time"
            ),
            sessions.c.acr,
            sessions.c.amr,
            User.id.label("user_id"),
            User.username,
            User.roles,
            User.is_active,
            key_set_version().label("key_version"),
        )
        .join(sessions, tokens.c.session_id == sessions.c.id)
        .join(User, sessions.c.user_id == User.id)
        .where(tokens.c.token_hash == token_hash)
    )
    users = cast(Table, User.__table__)
    # FOR SHARE: a change of the user waits for this login's session to be
    # committed, so its revocation sweep finds it; or this waits for the change,
    # then finds the version moved on and opens nothing. SQLite's writers take
    # turns anyway, and it has no such clause.
    opening = (
        select(
            session_id,
            users.c.id,
            now,
            # Only for the version before, while instances are rolled: this
            # version reads a session's last use from its newest refresh token.
            now,
            bindparam("ends_at", type_=UTCDateTime),
            bindparam("user_agent", type_=String),
            bindparam("ip_address", type_=String),
            bindparam("auth_time", type_=UTCDateTime),
            bindparam("acr", type_=String),
            bindparam("amr", type_=JSON),
        )
        .where(
            users.c.id == bindparam("user_id", type_=Uuid),
            users.c.account_version == bindparam("account_version", type_=Integer),
            users.c.is_active,
        )
        .with_for_update(read=True)
    )
    open_ = insert(sessions).from_select(
        [
            "id",
            "user_id",
            "created_at",
            "last_used_at",
            "expires_at",
            "user_agent",
            "ip_address",
            "auth_time",
            "acr",
            "amr",
        ],
        opening,
    )
    add_token = insert(tokens).values(
        session_id=session_id,
        token_hash=token_hash,
        created_at=now,
        expires_at=expires_at,
    )
    spend = (
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.spent_at.is_(None))
        .values(spent_at=now)
    )
    spent = spend.returning(tokens.c.session_id).cte("spent")
    rotate = (
        select(func.count().label("rotated"))
        .select_from(spent)
        .add_cte(
            insert(tokens)
            .from_select(
                ["session_id", "token_hash", "created_at", "expires_at"],
                select(spent.c.session_id, token_hash, now, expires_at),
            )
            .cte("successor")
        )
    )
    opened = open_.returning(sessions.c.id).cte("opened")
    start = insert(tokens).from_select(
        ["session_id", "token_hash", "created_at", "expires_at"],
        select(opened.c.id, token_hash, now, expires_at),
    )
    return _Statements(
        find=find,
        spent_at=select(tokens.c.spent_at).where(tokens.c.id == token_id),
        expiry=select(tokens.c.expires_at).where(tokens.c.token_hash == token_hash),
        open=open_,
        add_token=add_token,
        spend=spend,
        start=start,
        rotate=rotate,
    )
