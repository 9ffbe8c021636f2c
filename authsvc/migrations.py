"""Schema migrations: Alembic, driven with the app's own configuration.

Instances that start at once against an empty database must not all migrate
it: every upgrade and downgrade runs under a lock (a PostgreSQL advisory lock,
or a lock file beside an SQLite database), so the first migrates and the others
then find nothing left to do.

When ``authsvc serve`` finds the database unreachable at start it serves anyway,
and says so to the apps its workers build (``UPGRADE_PENDING``): each of them then
brings the schema up before the first request that finds the database answering.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from flask import Flask, current_app, request
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from . import clock
from .config import UPGRADE_PENDING_ENV
from .db import database_unavailable, get_db

# The put-off upgrade's line keeps the logger name it has always had.
log = logging.getLogger("authsvc.db")

_PACKAGE = Path(__file__).resolve().parent
#: Key of the PostgreSQL advisory lock that serialises migrations ("authsvc" in hex).
ADVISORY_LOCK_KEY = 0x61757468737663
#: Seconds between tries of a put-off schema upgrade while the database does not
#: answer; requests in between answer 503 at once instead of waiting for it.
UPGRADE_RETRY_INTERVAL = 5
#: Seconds a failed try must have taken to be waited out: a refused connection
#: costs nothing, and trying again at once brings the service back sooner.
UPGRADE_SLOW_TRY = 0.5
#: Where an app keeps its put-off upgrade, while one is pending.
_DEFERRED = "authsvc.deferred_upgrade"


def script_location() -> Path:
    """Where the migration scripts are: packaged in a wheel, or the repository's."""
    packaged = _PACKAGE / "migrations"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "alembic"


def alembic_config(engine: Engine, connection: Connection | None = None) -> Config:
    """An Alembic configuration bound to ``engine`` (or one of its connections)."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["engine"] = engine
    config.attributes["connection"] = connection
    return config


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that holds the migration lock until the block ends."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Waiting for the lock, and a long migration, must not hit the
            # statement timeout that guards ordinary requests.
            connection.execute(text("SET statement_timeout = 0"))
            connection.execute(
                text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                connection.execute(text("RESET statement_timeout"))
                connection.commit()
        return
    database = engine.url.database
    lock_path = (
        Path(f"{database}.migrate-lock")
        if database not in (None, "", ":memory:")
        else None
    )
    with _file_lock(lock_path), engine.connect() as connection:
        # Alembic's batch mode rebuilds a table and drops the old one, and with
        # foreign keys on, SQLite first deletes the dropped table's rows, with
        # every row elsewhere that cascades from them. The pragma only takes
        # effect outside a transaction, as it is here, before and after.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
        try:
            yield connection
        finally:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the schema to ``revision``, one instance at a time."""
    with app.app_context():
        engine = get_db().engine
        with migration_lock(engine) as connection:
            command.upgrade(alembic_config(engine, connection), revision)


def downgrade(app: Flask, revision: str) -> None:
    """Take the schema back to ``revision``, one instance at a time."""
    with app.app_context():
        engine = get_db().engine
        with migration_lock(engine) as connection:
            command.downgrade(alembic_config(engine, connection), revision)


def current_revision(app: Flask) -> str | None:
    """The revision the database is at, or ``None`` when it has no schema yet."""
    with app.app_context(), get_db().engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# --- a schema upgrade put off until the database answers -------------------------


class DatabaseUnreachable(DisconnectionError):
    """The database did not answer a moment ago: 503 at once, without asking again."""


def defer_upgrade() -> None:
    """Have apps built from now on, here and in forked workers, migrate on first use.

    The setting travels in this process's environment, which the workers it forks
    inherit (each builds its app after the fork). The first request of each such
    app that finds the database answering brings the schema to the newest revision
    before it is handled; until then requests answer 503 like any other request
    meeting an unreachable database.
    """
    os.environ[UPGRADE_PENDING_ENV] = "1"


class DeferredUpgrade:
    """One app's put-off upgrade, tried at most once per interval after a slow try."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pending = True
        self._lock = threading.Lock()
        #: When the app may next try the upgrade (its monotonic clock).
        self._retry_at = -float("inf")

    def ensure(self) -> None:
        """Run the upgrade if still pending; raise :class:`DatabaseUnreachable`.

        A database whose port accepts connections and never answers holds each try
        for the whole connect timeout, so after such a slow try it is tried again
        only after ``UPGRADE_RETRY_INTERVAL``: the requests in between fail at once.
        """
        if not self.pending:
            return
        if clock.monotonic() < self._retry_at:
            raise DatabaseUnreachable("the database did not answer a moment ago")
        with self._lock:
            if not self.pending:
                return
            if clock.monotonic() < self._retry_at:  # another thread just tried
                raise DatabaseUnreachable("the database did not answer a moment ago")
            started = clock.monotonic()
            try:
                # Under the migrations' own lock, so of workers and instances
                # arriving at once one migrates and the others find nothing to do.
                upgrade(self.app)
            except SQLAlchemyError as exc:
                if not database_unavailable(exc):
                    raise
                finished = clock.monotonic()
                if finished - started >= UPGRADE_SLOW_TRY:
                    self._retry_at = finished + UPGRADE_RETRY_INTERVAL
                raise DatabaseUnreachable("the database does not answer") from exc
            log.info("the database answers: schema brought to the newest revision")
            self.pending = False

    def before_request(self) -> None:
        """Bring the schema up before a request that needs the database."""
        if not self.pending:
            return
        # Liveness never asks the database, and readiness answers an outage in its
        # own shape: their views call ensure_schema() themselves, or not at all.
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(getattr(view, "view_class", None), "handles_database_outage", False):
            return
        self.ensure()


def upgrade_pending(app: Flask) -> bool:
    """Is ``app`` still to bring the schema up before serving (see :func:`init_app`)?"""
    deferred: DeferredUpgrade | None = app.extensions.get(_DEFERRED)
    return deferred is not None and deferred.pending


def ensure_schema() -> None:
    """Run the current app's put-off upgrade, if it has one still pending.

    Raises :class:`DatabaseUnreachable` while the database does not answer.
    """
    deferred: DeferredUpgrade | None = current_app.extensions.get(_DEFERRED)
    if deferred is not None:
        deferred.ensure()


def init_app(app: Flask) -> None:
    """Put off the upgrade to the first request when ``UPGRADE_PENDING`` says so."""
    if app.config.get("UPGRADE_PENDING"):
        deferred = DeferredUpgrade(app)
        app.extensions[_DEFERRED] = deferred
        app.before_request(deferred.before_request)
