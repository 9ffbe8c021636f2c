"""The raw-driver executor: statements compiled once, run on pooled driver connections.

The per-request read, login, refresh and throttle run here rather than through
SQLAlchemy's Core or ORM, whose per-execution work costs more than the driver's own
for a one-row statement. Rows come back as named tuples of the values Core would
give, errors as SQLAlchemy's. On SQLite, write transactions of this host queue on a
lock file (:class:`WriterQueue`).
"""

from __future__ import annotations

import fcntl
import os
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, cast

from sqlalchemy import ClauseElement, Engine, ReturnsRows
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler


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
        if self._descriptor is None or self._pid != os.getpid():
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        if self._descriptor is not None:
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

    def __init__(self, engine: Engine, statement: ReturnsRows) -> None:
        dialect = engine.dialect
        # Every Executable given here is a select or a write: a ClauseElement, which
        # compiles to SQL.
        clause = cast(ClauseElement, statement)
        compiled = cast(SQLCompiler, clause.compile(dialect=dialect))
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
        # A write without RETURNING has no columns: its rows are never read.
        columns = statement.exported_columns
        self.columns = [
            _processor(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
            )
            for column in columns
        ]
        # The fields are known only here, at run time; mypy wants them literal.
        self.row: type[Any] = namedtuple(  # type: ignore[misc]
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
        changed: int = self._once(params, lambda cursor: cursor.rowcount, False)
        return changed

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
    """The statements of one :func:`transaction`."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, statement: DriverStatement, params: Mapping[str, Any]) -> int:
        """Run ``statement``; return how many rows it changed."""
        self.cursor.execute(statement.sql, statement.arguments(params))
        changed: int = self.cursor.rowcount
        return changed


@contextmanager
def _driver_errors(engine: Engine, sql: str, args: Any = None) -> Iterator[Any]:
    """A pooled driver connection whose errors come out as SQLAlchemy's.

    A connection the server dropped is invalidated, so the pool never hands it
    out again, and the error says so (``connection_invalidated``).
    """
    dialect = engine.dialect
    error_class = dialect.loaded_dbapi.Error

    def wrapped(exc: Exception, lost: bool) -> StatementError:
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


@contextmanager
def transaction(
    engine: Engine, writers: WriterQueue | None
) -> Iterator[DriverTransaction]:
    """A transaction on one connection of ``engine``, for several writes.

    Committed when the block ends, rolled back if it raises. On SQLite it takes
    the write lock at once, so it never has to trade a read lock for it later.
    """
    begin = "BEGIN" if engine.dialect.name == "postgresql" else "BEGIN IMMEDIATE"
    # If the block raises, the pool rolls the connection back as it takes it in.
    with (
        writers or nullcontext(),
        _driver_errors(engine, begin) as connection,
    ):
        cursor = connection.cursor()
        cursor.execute(begin)
        yield DriverTransaction(cursor)
        cursor.execute("COMMIT")
