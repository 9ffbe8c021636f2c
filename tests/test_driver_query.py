"""Driver-level reads give what SQLAlchemy's Core gives, and fail the way it does."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import bindparam, func, literal_column, select, table, text
from sqlalchemy.exc import DBAPIError

from authsvc.db import DriverStatement, make_engine
from authsvc.models import AuthSession, User

CALLER = (
    select(
        User.username,
        User.email,
        User.roles,
        User.is_active,
        User.created_at,
        AuthSession.revoked_at,
        AuthSession.id.label("session_id"),
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(AuthSession.id == bindparam("session_id"), User.id == bindparam("user_id"))
)


def ids(app) -> dict:
    with app.extensions["authsvc.db"].engine.connect() as connection:
        session_id, user_id = connection.execute(
            select(AuthSession.id, AuthSession.user_id)
        ).one()
    return {"session_id": session_id, "user_id": user_id}


def test_a_row_is_converted_as_core_converts_it(app, tokens):
    database = app.extensions["authsvc.db"]
    params = ids(app)
    with database.engine.connect() as connection:
        expected = connection.execute(CALLER, params).one()

    row = database.statement(CALLER).first(params)

    assert tuple(row) == tuple(expected)
    assert row.username == "alice"
    assert row.roles == []
    assert row.is_active is True
    assert row.created_at.tzinfo == UTC
    assert row.revoked_at is None
    assert row.session_id == params["session_id"]


def test_no_row_is_none(app, tokens):
    params = ids(app)
    query = app.extensions["authsvc.db"].statement(CALLER)
    assert query.first({**params, "user_id": params["session_id"]}) is None


def test_one_query_per_statement_and_database(app):
    database = app.extensions["authsvc.db"]
    assert database.statement(CALLER) is database.statement(CALLER)


def test_a_failing_read_raises_sqlalchemys_error_and_returns_its_connection(app):
    database = app.extensions["authsvc.db"]
    broken = select(literal_column("1").label("one")).select_from(table("missing"))
    with pytest.raises(DBAPIError):
        database.statement(broken).first({})
    assert database.statements.pool.checkedout() == 0


def test_a_read_on_a_connection_the_server_dropped_is_tried_again(empty_database):
    url = empty_database("postgresql")
    engine = make_engine(url, pre_ping=False, autocommit=True, pool_size=1)
    other = make_engine(url)
    try:
        query = DriverStatement(engine, select(func.pg_backend_pid().label("pid")))
        first = query.first({}, retry=True).pid
        with other.begin() as connection:
            connection.execute(text(f"SELECT pg_terminate_backend({first}, 5000)"))

        again = query.first({}, retry=True).pid

        assert again != first
    finally:
        engine.dispose()
        other.dispose()
