"""Throwaway databases: an SQLite file in the run's folder, or a PostgreSQL database
made for the run and dropped at its end, whatever happens in between."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

#: Where the PostgreSQL databases are made: any database of the server will do.
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin(admin_url: str) -> Engine:
    return create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )


def postgres_version(admin_url: str) -> str | None:
    """The server's version, or ``None`` when it does not answer."""
    engine = _admin(admin_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database ``authsvc_bench_<random>``; its URL. Dropped after."""
    name = f"authsvc_bench_{secrets.token_hex(6)}"
    engine = _admin(admin_url)
    quoted = engine.dialect.identifier_preparer.quote(name)
    try:
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))
        yield make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        engine.dispose()


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    """An SQLite database file in ``folder`` (removed with the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    yield f"sqlite:///{folder / 'authsvc.db'}"
