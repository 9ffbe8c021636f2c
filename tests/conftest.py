"""Fixtures: API tests run on SQLite and on a throwaway PostgreSQL database each.

``AUTHSVC_TEST_BACKENDS=sqlite`` narrows a local run; CI runs both, and a
PostgreSQL that does not answer is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Before helpers is imported: its assertions (problem()) then show what differed.
pytest.register_assert_rewrite("helpers")

from helpers import PASSWORD, FakeClock
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from authsvc import create_app
from authsvc.db import Base
from authsvc.migrations import upgrade

POSTGRES_URL = os.environ.get(
    "AUTHSVC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = os.environ.get("AUTHSVC_TEST_BACKENDS", "sqlite,postgresql").split(",")

#: Cheap argon2id so the suite stays fast; production parameters are tested apart.
FAST_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_COST": 64}
SECRET = "test-secret-" + "x" * 40


def _postgres_database() -> tuple[str, str]:
    name = f"authsvc_test_{uuid.uuid4().hex[:12]}"
    return name, make_url(POSTGRES_URL).set(database=name).render_as_string(False)


def create_postgres_database() -> tuple[str, str]:
    """Create an empty PostgreSQL database of the caller's own; return name and URL."""
    name, url = _postgres_database()
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, url


def drop_postgres_database(name: str) -> None:
    """Drop a database made by :func:`create_postgres_database`."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def empty_database(tmp_path_factory: pytest.TempPathFactory):
    """A factory of empty databases of a backend, removed at the end of the run."""
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            folder = tmp_path_factory.mktemp("sqlite")
            return f"sqlite:///{folder / 'authsvc.db'}"
        name, url = create_postgres_database()
        created.append(name)
        return url

    yield make
    for name in created:
        drop_postgres_database(name)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, empty_database, tmp_path_factory):
    """A database at the newest schema, one per backend, shared by the run."""
    url = empty_database(request.param)
    app = create_app(
        {
            "DATABASE_URL": url,
            "SECRET_KEY": SECRET,
            "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        }
    )
    upgrade(app)
    app.extensions["authsvc.db"].dispose()
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, clock: FakeClock, tmp_path) -> dict:
    """The overrides the ``app`` fixture passes; tests may change them first."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "CLOCK": clock,
        # Tests register many users from one address; throttling is tested apart.
        "REGISTRATION_RATE_LIMIT": "10000 per minute",
        **FAST_ARGON2,
    }


@pytest.fixture
def app(settings: dict) -> Iterator:
    app = create_app(settings)
    yield app
    database = app.extensions["authsvc.db"]
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            # The signing keys outlive a test: generating one per test is slow.
            if table.name != "signing_keys":
                connection.execute(delete(table))
    database.dispose()


@pytest.fixture
def make_app(settings: dict, app) -> Iterator:
    """Build another app on the same database, with some settings changed."""
    made = []

    def make(**changes):
        made.append(create_app({**settings, **changes}))
        return made[-1]

    yield make
    for other in made:
        other.extensions["authsvc.db"].dispose()


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


@pytest.fixture
def fresh_app(make_app, settings, empty_database):
    """An app on a new, migrated database of the current backend.

    ``fresh_app(url)`` builds another app on a database made earlier.
    """

    def make(url: str | None = None, **changes):
        url = url or empty_database(backend_of(settings["DATABASE_URL"]))
        made = make_app(DATABASE_URL=url, **changes)
        upgrade(made)
        return made

    return make


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def register(client):
    """Register a user through the API and return its JSON."""

    def register(username: str = "alice", password: str = PASSWORD, **extra) -> dict:
        response = client.post(
            "/users", json={"username": username, "password": password, **extra}
        )
        assert response.status_code == 201, response.json
        return response.json

    return register


@pytest.fixture
def login(client, register):
    """Register ``alice`` (unless told otherwise) and log in; return the tokens."""

    def login(username: str = "alice", password: str = PASSWORD) -> dict:
        response = client.post(
            "/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.json
        return response.json

    return login


@pytest.fixture
def tokens(register, login) -> dict:
    """A logged-in ``alice``."""
    register()
    return login()
