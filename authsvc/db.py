"""The database: declarative base, engines per app, one ORM session per app context.

The database is reached two ways, and this is the rule: the per-request read, login,
refresh and throttle use prebuilt statements in a store module, run by
:mod:`authsvc.driver` (:meth:`Database.statement`, :meth:`Database.transaction`);
everything else uses the ORM session (:func:`get_session`, or a sessionmaker of
:func:`session_factory` where a unit of work must commit nothing of the request's).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from flask import Flask, current_app, g
from sqlalchemy import (
    DateTime,
    Engine,
    MetaData,
    ReturnsRows,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import CursorResult, Dialect, Result, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from . import driver
from .driver import DriverStatement, DriverTransaction, WriterQueue
from .errors import Problem, Unavailable, translate_with

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Seconds SQLite waits for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT = 30
#: How much of an SQLite file each connection reads through a memory map (address
#: space, not memory: the pages are the operating system's file cache).
SQLITE_MMAP_BYTES = 1 << 30
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
        stamp: datetime = value  # what both drivers give for this column
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


def tune_sqlite(dbapi_connection: Any, _record: Any = None) -> None:
    """Set up a new SQLite connection for several workers at once."""
    # WAL lets readers run beside one writer; the busy timeout makes concurrent
    # writers from several gunicorn workers wait their turn instead of failing.
    # Every write of another connection empties a connection's page cache; with
    # the file mapped, reading the pages again costs no system call.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
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
        event.listen(engine, "connect", tune_sqlite)
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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """ORM sessions on ``engine``, configured alike wherever the service opens them."""
    return sessionmaker(engine, expire_on_commit=False)


class Database:
    """The engines and session factory of one app."""

    def __init__(self, url: str, *, statement_timeout: int = 0) -> None:
        self.engine = make_engine(url, statement_timeout=statement_timeout)
        self.postgres = self.engine.dialect.name == "postgresql"

        def beside(**options: Any) -> Engine:
            # On PostgreSQL a small pool of its own, each statement its own
            # transaction and no pre-ping: it would double the round trips of each
            # statement, and a connection the server dropped is met by trying a
            # read once more instead. SQLite has nothing to gain from a second pool.
            if not self.postgres:
                return self.engine
            return make_engine(
                url,
                statement_timeout=statement_timeout,
                autocommit=True,
                pre_ping=False,
                pool_size=2,
                **options,
            )

        #: For the statements of the hot paths (:class:`DriverStatement`).
        self.statements = beside()
        #: For throttle counters. Losing the last instant of them in a crash of
        #: the database costs nothing, so on PostgreSQL their commits do not wait
        #: for the disk: a login then waits for one flush, its session's, not three.
        self.counters = beside(durable=False)
        self.sessionmaker = session_factory(self.engine)
        self._compiled: dict[tuple[Engine, ReturnsRows], DriverStatement] = {}
        database = self.engine.url.database
        file = not self.postgres and database and database != ":memory:"
        self._writers = WriterQueue(f"{database}-writers") if file else None

    def statement(
        self, statement: ReturnsRows, *, engine: Engine | None = None
    ) -> DriverStatement:
        """``statement`` as a :class:`DriverStatement`, compiled once per engine.

        It runs on the pool of ``statements`` unless ``engine`` names another.
        """
        engine = engine or self.statements
        compiled = self._compiled.get((engine, statement))
        if compiled is None:
            compiled = DriverStatement(engine, statement)
            self._compiled[engine, statement] = compiled
        return compiled

    def transaction(self) -> AbstractContextManager[DriverTransaction]:
        """A transaction on one connection of ``statements``, for several writes.

        Committed when the block ends, rolled back if it raises (see
        :func:`driver.transaction`).
        """
        return driver.transaction(self.statements, self._writers)

    def ping(self) -> None:
        """Run a trivial query; raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection, of every engine."""
        for engine in {self.engine, self.statements, self.counters}:
            engine.dispose()
        if self._writers is not None:
            self._writers.close()


def database_unavailable(error: BaseException) -> bool:
    """Is ``error`` the database being unreachable, gone, or too slow (503)?

    The driver's operational errors cover a refused or lost connection, a server
    shutting down, and a statement cancelled by the statement timeout (psycopg's
    ``QueryCanceled`` is one); they are worth retrying later, unlike a bad query.
    """
    if isinstance(error, DisconnectionError | PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    return error.connection_invalidated or isinstance(
        error, OperationalError | InterfaceError
    )


#: The outage warning keeps the logger name operators have always seen it under.
_outage_log = logging.getLogger("authsvc.errors")


def outage_problem(error: BaseException) -> Problem | None:
    """The 503 a request meeting an unavailable database answers; else ``None``."""
    if not database_unavailable(error):
        return None
    cause = error.orig if isinstance(error, DBAPIError) else error
    _outage_log.warning("database unavailable: %s", type(cause).__name__)
    return Unavailable()


def init_app(app: Flask) -> None:
    """Create the app's engine and close each context's session at teardown."""
    app.extensions["authsvc.db"] = Database(
        app.config["DATABASE_URL"], statement_timeout=app.config["DB_STATEMENT_TIMEOUT"]
    )
    app.teardown_appcontext(_close_session)
    translate_with(app, outage_problem)


def get_db() -> Database:
    """Return the current app's :class:`Database`."""
    database: Database = current_app.extensions["authsvc.db"]
    return database


def get_session() -> Session:
    """Return the ORM session of the current app context, opening it on first use."""
    if "db_session" not in g:
        g.db_session = get_db().sessionmaker()
    session: Session = g.db_session
    return session


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """How many rows an UPDATE or DELETE run on the ORM session changed."""
    # Session.execute is typed to give a Result; for DML it is a CursorResult.
    return cast(CursorResult[*tuple[Any, ...]], result).rowcount


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
