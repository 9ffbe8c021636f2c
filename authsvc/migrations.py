"""Schema migrations: Alembic, driven with the app's own configuration.

Instances that start at once against an empty database must not all migrate
it: every upgrade and downgrade runs under a lock (a PostgreSQL advisory lock,
or a lock file beside an SQLite database), so the first migrates and the others
then find nothing left to do.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import Connection, Engine, text

from .db import get_db

_PACKAGE = Path(__file__).resolve().parent
#: Key of the PostgreSQL advisory lock that serialises migrations ("authsvc" in hex).
ADVISORY_LOCK_KEY = 0x61757468737663


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
