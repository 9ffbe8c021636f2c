"""Driver-level statements give what SQLAlchemy's Core gives, and fail the way it
does; their writes are committed, or rolled back whole; SQLite is tuned for them."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Insert,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.exc import DBAPIError

from authsvc.db import (
    SQLITE_BUSY_TIMEOUT,
    SQLITE_MMAP_BYTES,
    Database,
    make_engine,
)
from authsvc.driver import DriverStatement
from authsvc.models import AuthSession, ThrottleCounter, User

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


def counter_rows(app) -> list:
    with app.extensions["authsvc.db"].engine.connect() as connection:
        return connection.execute(
            select(ThrottleCounter.key, ThrottleCounter.count).order_by(
                ThrottleCounter.key
            )
        ).all()


def add_counter(key: str) -> Insert:
    # The count is the statement's own value, not a parameter.
    return insert(ThrottleCounter).values(
        key=key, count=1, expires_at=bindparam("expires_at")
    )


def test_a_write_is_committed_on_its_own(app):
    database = app.extensions["authsvc.db"]
    later = datetime.now(UTC) + timedelta(minutes=1)

    changed = database.statement(add_counter("alone")).run({"expires_at": later})

    assert changed == 1
    assert counter_rows(app) == [("alone", 1)]


def test_a_transaction_commits_every_statement_of_its_block(app):
    database = app.extensions["authsvc.db"]
    later = datetime.now(UTC) + timedelta(minutes=1)
    with database.transaction() as transaction:
        for key in ("first", "second"):
            transaction.execute(
                database.statement(add_counter(key)), {"expires_at": later}
            )

    assert counter_rows(app) == [("first", 1), ("second", 1)]


def test_a_transaction_whose_block_raises_leaves_nothing(app):
    database = app.extensions["authsvc.db"]
    later = datetime.now(UTC) + timedelta(minutes=1)
    with pytest.raises(RuntimeError), database.transaction() as transaction:
        transaction.execute(
            database.statement(add_counter("half")), {"expires_at": later}
        )
        raise RuntimeError("the second write never happens")

    assert counter_rows(app) == []
    assert database.statements.pool.checkedout() == 0


def test_a_failing_statement_rolls_its_transaction_back(app):
    database = app.extensions["authsvc.db"]
    later = datetime.now(UTC) + timedelta(minutes=1)
    statement = database.statement(add_counter("twice"))
    with pytest.raises(DBAPIError), database.transaction() as transaction:
        transaction.execute(statement, {"expires_at": later})
        transaction.execute(statement, {"expires_at": later})  # the same key

    assert counter_rows(app) == []


def test_sqlite_writers_of_other_processes_queue_on_a_lock_file(empty_database):
    database = Database(empty_database("sqlite"))
    queue = database._writers
    done = multiprocessing.get_context("fork").Event()

    def write() -> None:
        with database.transaction():
            done.set()

    try:
        with queue:  # as a worker in the middle of a refresh
            writer = multiprocessing.get_context("fork").Process(target=write)
            writer.start()
            assert not done.wait(0.5)
        assert done.wait(10)
        writer.join(10)
        assert writer.exitcode == 0
        assert Path(queue.path).exists()
    finally:
        database.dispose()


def test_postgresql_has_no_lock_file(empty_database):
    database = Database(empty_database("postgresql"))
    try:
        assert database._writers is None
    finally:
        database.dispose()


def test_sqlite_connections_are_tuned_for_workers(empty_database):
    engine = make_engine(empty_database("sqlite"))
    try:
        with engine.connect() as connection:

            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT * 1000
            assert pragma("mmap_size") == SQLITE_MMAP_BYTES
    finally:
        engine.dispose()
