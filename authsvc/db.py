"""The database: declarative base, engine per app, one ORM session per app context."""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import DateTime, Engine, MetaData, Select, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from .errors import database_unavailable

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Seconds SQLite waits for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT = 30
#: Seconds to wait for a PostgreSQL connection to be made.
CONNECT_TIMEOUT = 5
#: Seconds to wait for a free connection of the pool.
POOL_TIMEOUT = 5


class Base(DeclarativeBase):
    """Base of every table, with constraint names Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC, on every backend.

    SQLite has no time zones: values are stored as naive UTC and given their zone
    back when read, so comparisons in SQL and in Python agree.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; the busy timeout makes concurrent
    # writers from several gunicorn workers wait their turn instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cursor.close()


def make_engine(
    url: str,
    *,
    statement_timeout: int = 0,
    durable: bool = True,
    pre_ping: bool = True,
    autocommit: bool = False,
    pool_size: int = 5,
) -> Engine:
    """Build the engine for ``url``: WAL SQLite, or pooled PostgreSQL.

    On PostgreSQL every wait is bounded: making a connection (``CONNECT_TIMEOUT``),
    getting one from the pool (``POOL_TIMEOUT``) and, unless ``statement_timeout``
    is 0, each statement (seconds; the server cancels it past that). With
    ``pre_ping`` the pool replaces connections the server dropped before handing
    them out, so no restart is needed after an outage. Without ``durable``,
    commits return before the server's write-ahead log reaches the disk (a crash
    of the server can lose the last instant of them, never corrupt anything).
    With ``autocommit`` each statement is its own transaction: no BEGIN and no
    COMMIT or ROLLBACK travel with it. SQLite keeps its busy timeout instead.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    # Startup options: no extra round trip, and they hold for every statement of
    # the connection. Options already in the URL are kept.
    given = parsed.query.get("options", "")
    options = [" ".join(given) if isinstance(given, tuple) else given]
    if statement_timeout:
        options.append(f"-c statement_timeout={statement_timeout * 1000}")
    if not durable:
        options.append("-c synchronous_commit=off")
    if any(options):
        connect_args["options"] = " ".join(filter(None, options))
    extra: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args,
        **extra,
    )


class Database:
    """The engines and session factory of one app."""

    def __init__(self, url: str, *, statement_timeout: int = 0) -> None:
        self.engine = make_engine(url, statement_timeout=statement_timeout)
        postgres = self.engine.dialect.name == "postgresql"

        def beside(**options: Any) -> Engine:
            # On PostgreSQL a small pool of its own, each statement its own
            # transaction; SQLite has nothing to gain from a second pool.
            if not postgres:
                return self.engine
            return make_engine(
                url,
                statement_timeout=statement_timeout,
                autocommit=True,
                pool_size=2,
                **options,
            )

        #: For the reads of every request (:class:`DriverQuery`). No pre-ping: it
        #: would double the round trips of a read, which instead is tried once
        #: more on a fresh connection when the server dropped its first one.
        self.reads = beside(pre_ping=False)
        #: For throttle counters. Losing the last instant of them in a crash of
        #: the database costs nothing, so on PostgreSQL their commits do not wait
        #: for the disk: a login then waits for one flush, its session's, not four.
        self.counters = beside(durable=False)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._driver_queries: dict[Select[Any], DriverQuery] = {}

    def driver_query(self, statement: Select[Any]) -> DriverQuery:
        """``statement`` as a :class:`DriverQuery` on the reads' pool, compiled once."""
        query = self._driver_queries.get(statement)
        if query is None:
            query = DriverQuery(self.reads, statement)
            self._driver_queries[statement] = query
        return query

    def ping(self) -> None:
        """Run a trivial query; raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection, of every engine."""
        for engine in {self.engine, self.reads, self.counters}:
            engine.dispose()


class DriverQuery:
    """A SELECT compiled once, then run straight on a pooled driver connection.

    For a read made on every request. Per execution SQLAlchemy's Core works out
    a cache key, builds an execution context and wraps the cursor in a result,
    several times the driver's own work for a one-row lookup by primary key. This
    keeps what matters: the pool, the column types' conversions, and errors raised
    as SQLAlchemy's, a lost connection invalidated.
    """

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.engine = engine
        self.sql = compiled.string
        #: Bind names in the order of the statement's placeholders, or ``None``
        #: for a driver taking a mapping (psycopg).
        self.order = compiled.positiontup
        self.binds = {
            name: _processor(bind.type.dialect_impl(dialect).bind_processor(dialect))
            for name, bind in compiled.binds.items()
        }
        self.columns = [
            _processor(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
            )
            for column in statement.selected_columns
        ]
        self.row = namedtuple(  # type: ignore[misc]
            "Row", [column.key for column in statement.selected_columns]
        )

    def one_or_none(self, params: Mapping[str, Any]) -> Any:
        """The first row for ``params`` as a named tuple, converted like Core
        would, or ``None``.

        A read on a connection the server dropped (a restart) is tried once more,
        on a fresh pool: reading twice changes nothing.
        """
        values = {name: self.binds[name](value) for name, value in params.items()}
        args = values if self.order is None else [values[name] for name in self.order]
        try:
            row = self._fetch(args)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self.engine.dispose()  # its other connections went with the server
            row = self._fetch(args)
        if row is None:
            return None
        pairs = zip(self.columns, row, strict=True)
        return self.row._make(convert(value) for convert, value in pairs)

    def _fetch(self, args: Any) -> Any:
        dialect = self.engine.dialect
        try:
            connection = self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:  # the pool hands these on bare
            raise self._error(exc, args, lost=False) from exc
        cursor = None
        try:
            cursor = connection.cursor()
            cursor.execute(self.sql, args)
            return cursor.fetchone()
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
            if lost:
                connection.invalidate(exc)
            raise self._error(exc, args, lost=lost) from exc
        finally:
            if cursor is not None and connection.is_valid:
                cursor.close()
            connection.close()

    def _error(self, exc: Exception, args: Any, *, lost: bool) -> DBAPIError:
        dialect = self.engine.dialect
        return DBAPIError.instance(
            self.sql,
            args,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        )


def _processor(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    return convert if convert is not None else _same


def _same(value: Any) -> Any:
    return value


# --- a schema upgrade put off until the database answers -------------------------

#: Set by ``authsvc serve`` when the database was unreachable at start; the workers
#: it forks inherit it (each builds its app after the fork).
_upgrade_pending = False
_upgrade_lock = threading.Lock()


def defer_upgrade() -> None:
    """Have apps built from now on, here and in forked workers, migrate on first use.

    The first request of each such app that finds the database answering brings
    the schema to the newest revision before it is handled; until then requests
    answer 503 like any other request meeting an unreachable database.
    """
    global _upgrade_pending
    _upgrade_pending = True


def _upgrade_if_pending() -> None:
    global _upgrade_pending
    if not _upgrade_pending:
        return
    with _upgrade_lock:
        if not _upgrade_pending:
            return
        try:
            _upgrade(current_app._get_current_object())  # type: ignore[attr-defined]
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                raise
            # Still unreachable: the request goes on, and answers 503 where it
            # needs the database (/health in its own shape); liveness does not.
            return
        _upgrade_pending = False


def _upgrade(app: Flask) -> None:
    # Under the migrations' own lock, so of workers and instances arriving at
    # once one migrates and the others find nothing left to do.
    from .migrations import upgrade  # migrations builds on this module

    upgrade(app)
    log.info("the database answers: schema brought to the newest revision")


def init_app(app: Flask) -> None:
    """Create the app's engine and close each context's session at teardown."""
    app.extensions["authsvc.db"] = Database(
        app.config["DATABASE_URL"], statement_timeout=app.config["DB_STATEMENT_TIMEOUT"]
    )
    app.teardown_appcontext(_close_session)
    if _upgrade_pending:
        app.before_request(_upgrade_if_pending)


def get_db() -> Database:
    """Return the current app's :class:`Database`."""
    return current_app.extensions["authsvc.db"]


def get_session() -> Session:
    """Return the ORM session of the current app context, opening it on first use."""
    if "db_session" not in g:
        g.db_session = get_db().sessionmaker()
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
