"""The database: declarative base, engine per app, one ORM session per app context."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy import (
    DateTime,
    Engine,
    Executable,
    MetaData,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from . import clock
from .errors import Problem, Unavailable, translate_with

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
#: How much of an SQLite file each connection reads through a memory map (address
#: space, not memory: the pages are the operating system's file cache).
SQLITE_MMAP_BYTES = 1 << 30
#: Seconds to wait for a PostgreSQL connection to be made.
CONNECT_TIMEOUT = 5
#: Seconds to wait for a free connection of the pool.
POOL_TIMEOUT = 5
#: Seconds between tries of a put-off schema upgrade while the database does not
#: answer; requests in between answer 503 at once instead of waiting for it.
UPGRADE_RETRY_INTERVAL = 5
#: Seconds a failed try must have taken to be waited out: a refused connection
#: costs nothing, and trying again at once brings the service back sooner.
UPGRADE_SLOW_TRY = 0.5


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
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._compiled: dict[tuple[Engine, Executable], DriverStatement] = {}
        database = self.engine.url.database
        file = not self.postgres and database and database != ":memory:"
        self._writers = WriterQueue(f"{database}-writers") if file else None

    def statement(
        self, statement: Executable, *, engine: Engine | None = None
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

    @contextmanager
    def transaction(self) -> Iterator[DriverTransaction]:
        """A transaction on one connection of ``statements``, for several writes.

        Committed when the block ends, rolled back if it raises. On SQLite it takes
        the write lock at once, so it never has to trade a read lock for it later.
        """
        begin = "BEGIN" if self.postgres else "BEGIN IMMEDIATE"
        # If the block raises, the pool rolls the connection back as it takes it in.
        with (
            self._writers or nullcontext(),
            _driver_errors(self.statements, begin) as connection,
        ):
            cursor = connection.cursor()
            cursor.execute(begin)
            yield DriverTransaction(cursor)
            cursor.execute("COMMIT")

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


class WriterQueue:
    """Write transactions of this host on one SQLite file, queued in the kernel.

    A writer that finds SQLite's write lock taken sleeps, 1 ms at first and longer
    after, before it tries again, while a refresh holds the lock for a fraction
    of that. Queued on a lock file instead, the next writer wakes as soon as the
    one before is done. Only an optimisation: SQLite's own lock and busy timeout
    still keep writers apart, those of other code paths and threads included.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        # A descriptor inherited across fork would be one lock for every worker.
        if self._pid != os.getpid():
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this process's descriptor of the lock file, if it has one."""
        if self._descriptor is not None and self._pid == os.getpid():
            os.close(self._descriptor)
        self._descriptor, self._pid = None, 0


class DriverStatement:
    """A statement compiled once, then run straight on a pooled driver connection.

    For the statements of every request and every refresh. Per execution
    SQLAlchemy's Core works out a cache key, builds an execution context and
    wraps the cursor in a result, several times the driver's own work for a
    one-row statement. This keeps what matters: the pool, the column types'
    conversions, and errors raised as SQLAlchemy's, a lost connection invalidated.
    """

    def __init__(self, engine: Engine, statement: Executable) -> None:
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
        #: Values the statement itself gives, like the 1 of ``values(count=1)``.
        self.constants = {
            name: bind.value
            for name, bind in compiled.binds.items()
            if not bind.required
        }
        columns = statement.exported_columns  # type: ignore[attr-defined]
        self.columns = [
            _processor(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
            )
            for column in columns
        ]
        self.row = namedtuple(  # type: ignore[misc]
            "Row", [column.key for column in columns]
        )

    def first(self, params: Mapping[str, Any], *, retry: bool = False) -> Any:
        """Run as a transaction of its own; the first row, or ``None``.

        Rows are named tuples of the values Core would give. With ``retry``, a
        statement that met a connection the server had dropped (a restart) runs
        once more on a fresh pool: only for one that may safely run twice, as a
        read may. Otherwise it is never run again, since a write that failed may
        still have been made.
        """
        row = self._once(params, lambda cursor: cursor.fetchone(), retry)
        return None if row is None else self.convert(row)

    def all(self, params: Mapping[str, Any], *, retry: bool = False) -> list[Any]:
        """Like :meth:`first`, but every row."""
        rows = self._once(params, lambda cursor: cursor.fetchall(), retry)
        return [self.convert(row) for row in rows]

    def run(self, params: Mapping[str, Any]) -> int:
        """Run once, as a transaction of its own; how many rows it changed."""
        return self._once(params, lambda cursor: cursor.rowcount, False)

    def run_many(self, params: Sequence[Mapping[str, Any]]) -> None:
        """Run once for each of ``params``, on one connection.

        Each is a transaction of its own on PostgreSQL, where the driver sends
        them all before it waits for the first answer; on SQLite, one for all.
        """
        args = [self.arguments(one) for one in params]
        with _driver_errors(self.engine, self.sql, args) as connection:
            connection.cursor().executemany(self.sql, args)
            connection.commit()

    def _once(
        self, params: Mapping[str, Any], result: Callable[[Any], Any], retry: bool
    ) -> Any:
        args = self.arguments(params)
        try:
            return self._execute(args, result)
        except DBAPIError as exc:
            if not (retry and exc.connection_invalidated):
                raise
            self.engine.dispose()  # its other connections went with the server
            return self._execute(args, result)

    def _execute(self, args: Any, result: Callable[[Any], Any]) -> Any:
        with _driver_errors(self.engine, self.sql, args) as connection:
            cursor = connection.cursor()
            cursor.execute(self.sql, args)
            found = result(cursor)
            cursor.close()
            connection.commit()  # SQLite's driver began a transaction for a write
        return found

    def arguments(self, params: Mapping[str, Any]) -> Any:
        """``params`` converted for the driver, in the form it takes them."""
        given = {**self.constants, **params} if self.constants else params
        values = {name: convert(given[name]) for name, convert in self.binds.items()}
        return values if self.order is None else [values[name] for name in self.order]

    def convert(self, row: Sequence[Any]) -> Any:
        """A driver's row as a named tuple of the values Core would give."""
        pairs = zip(self.columns, row, strict=True)
        return self.row._make([convert(value) for convert, value in pairs])


class DriverTransaction:
    """The statements of one :meth:`Database.transaction`."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, statement: DriverStatement, params: Mapping[str, Any]) -> int:
        """Run ``statement``; return how many rows it changed."""
        self.cursor.execute(statement.sql, statement.arguments(params))
        return self.cursor.rowcount


@contextmanager
def _driver_errors(engine: Engine, sql: str, args: Any = None) -> Iterator[Any]:
    """A pooled driver connection whose errors come out as SQLAlchemy's.

    A connection the server dropped is invalidated, so the pool never hands it
    out again, and the error says so (``connection_invalidated``).
    """
    dialect = engine.dialect
    error_class = dialect.loaded_dbapi.Error

    def wrapped(exc: Exception, lost: bool) -> DBAPIError:
        return DBAPIError.instance(
            sql, args, exc, error_class, connection_invalidated=lost, dialect=dialect
        )

    try:
        connection = engine.raw_connection()
    except error_class as exc:  # the pool hands these on bare
        raise wrapped(exc, False) from exc
    try:
        yield connection
    except error_class as exc:
        lost = dialect.is_disconnect(exc, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(exc)
        raise wrapped(exc, lost) from exc
    finally:
        connection.close()


def _processor(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    return convert if convert is not None else _same


def _same(value: Any) -> Any:
    return value


# --- a schema upgrade put off until the database answers -------------------------

#: Set by ``authsvc serve`` when the database was unreachable at start; the workers
#: it forks inherit it (each builds its app after the fork).
_upgrade_pending = False
_upgrade_lock = threading.Lock()
#: When this process may next try the upgrade (its app's monotonic clock).
_upgrade_retry_at = -float("inf")


class DatabaseUnreachable(DisconnectionError):
    """The database did not answer a moment ago: 503 at once, without asking again."""


def defer_upgrade() -> None:
    """Have apps built from now on, here and in forked workers, migrate on first use.

    The first request of each such app that finds the database answering brings
    the schema to the newest revision before it is handled; until then requests
    answer 503 like any other request meeting an unreachable database.
    """
    global _upgrade_pending
    _upgrade_pending = True


def ensure_schema() -> None:
    """Run the put-off upgrade if there is one; raise :class:`DatabaseUnreachable`.

    A database whose port accepts connections and never answers holds each try
    for the whole connect timeout, so after such a slow try it is tried again
    only after ``UPGRADE_RETRY_INTERVAL``: the requests in between fail at once.
    """
    global _upgrade_pending, _upgrade_retry_at
    if not _upgrade_pending:
        return
    if clock.monotonic() < _upgrade_retry_at:
        raise DatabaseUnreachable("the database did not answer a moment ago")
    with _upgrade_lock:
        if not _upgrade_pending:
            return
        if clock.monotonic() < _upgrade_retry_at:  # another thread just tried
            raise DatabaseUnreachable("the database did not answer a moment ago")
        started = clock.monotonic()
        try:
            _upgrade(current_app._get_current_object())  # type: ignore[attr-defined]
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                raise
            finished = clock.monotonic()
            if finished - started >= UPGRADE_SLOW_TRY:
                _upgrade_retry_at = finished + UPGRADE_RETRY_INTERVAL
            raise DatabaseUnreachable("the database does not answer") from exc
        _upgrade_pending = False


def _upgrade_if_pending() -> None:
    if not _upgrade_pending:
        return
    # Liveness never asks the database, and readiness answers an outage in its
    # own shape: their views call ensure_schema() themselves, or not at all.
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(getattr(view, "view_class", None), "handles_database_outage", False):
        return
    ensure_schema()


def _upgrade(app: Flask) -> None:
    # Under the migrations' own lock, so of workers and instances arriving at
    # once one migrates and the others find nothing left to do.
    from .migrations import upgrade  # migrations builds on this module

    upgrade(app)
    log.info("the database answers: schema brought to the newest revision")


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
