"""The schema comes only from Alembic, and the migrations match the models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from conftest import BACKENDS
from helpers import PASSWORD
from sqlalchemy import (
    JSON,
    Boolean,
    Integer,
    String,
    Uuid,
    column,
    inspect,
    select,
    table,
)

from authsvc import create_app, session_store
from authsvc.db import UTCDateTime, get_db, get_session
from authsvc.migrations import (
    alembic_config,
    current_revision,
    downgrade,
    migration_lock,
    upgrade,
)
from authsvc.models import AuthSession

#: The revision before sessions stopped storing their last use.
STORED_LAST_USE = "2d8e6f0b4c17"
#: The revision before usernames had a confusable skeleton.
NO_SKELETON = "6f2a9d41c3e8"
#: The revision before sessions remembered how they were authenticated.
NO_AUTH_TIME = "d5e1c9a3b717"

TABLES = {
    "alembic_version",
    "users",
    "sessions",
    "refresh_tokens",
    "throttle_counters",
    "signing_keys",
    "one_time_codes",
    "mail_outbox",
    "mfa_factors",
    "mfa_recovery_codes",
    "mfa_tokens",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_app(request, empty_database, tmp_path):
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} not in AUTHSVC_TEST_BACKENDS")
    app = create_app(
        {
            "DATABASE_URL": empty_database(request.param),
            "SECRET_KEY": "s" * 40,
            "INSTANCE_PATH": str(tmp_path),
        }
    )
    yield app
    app.extensions["authsvc.db"].dispose()


def table_names(app) -> set[str]:
    with app.app_context():
        return set(inspect(get_db().engine).get_table_names())


def test_upgrade_downgrade_upgrade(fresh_app):
    assert current_revision(fresh_app) is None
    upgrade(fresh_app)
    assert table_names(fresh_app) == TABLES
    head = current_revision(fresh_app)
    assert head is not None
    downgrade(fresh_app, "base")
    assert table_names(fresh_app) <= {"alembic_version"}
    assert current_revision(fresh_app) is None
    upgrade(fresh_app)
    assert current_revision(fresh_app) == head


def test_models_and_migrations_agree(fresh_app):
    upgrade(fresh_app)
    with fresh_app.app_context():
        # Raises when autogenerate would find any difference.
        command.check(alembic_config(get_db().engine))


LOGGED_IN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
REFRESHED = LOGGED_IN + timedelta(minutes=45)

users = table(
    "users",
    column("id", Uuid),
    column("username", String),
    column("username_key", String),
    column("password_hash", String),
    column("is_active", Boolean),
    column("roles", JSON),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
    column("password_changed_at", UTCDateTime),
)
stored_sessions = table(
    "sessions",
    column("id", Uuid),
    column("user_id", Uuid),
    column("created_at", UTCDateTime),
    column("last_used_at", UTCDateTime),
    column("expires_at", UTCDateTime),
)
refresh_tokens = table(
    "refresh_tokens",
    column("id", Integer),
    column("session_id", Uuid),
    column("token_hash", String),
    column("created_at", UTCDateTime),
    column("expires_at", UTCDateTime),
)


def seed_session(app, *, stored_last_use: datetime) -> uuid.UUID:
    """A user with one session, logged in and refreshed once; its id."""
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    ends = LOGGED_IN + timedelta(days=30)
    with app.app_context(), get_db().engine.begin() as connection:
        connection.execute(
            users.insert().values(
                id=user_id,
                username="ada",
                username_key="ada",
                password_hash="x",
                is_active=True,
                roles=[],
                created_at=LOGGED_IN,
                updated_at=LOGGED_IN,
                password_changed_at=LOGGED_IN,
            )
        )
        connection.execute(
            stored_sessions.insert().values(
                id=session_id,
                user_id=user_id,
                created_at=LOGGED_IN,
                last_used_at=stored_last_use,
                expires_at=ends,
            )
        )
        connection.execute(
            refresh_tokens.insert(),
            [
                {
                    "session_id": session_id,
                    "token_hash": letter * 64,
                    "created_at": moment,
                    "expires_at": ends,
                }
                for letter, moment in (("a", LOGGED_IN), ("b", REFRESHED))
            ],
        )
    return session_id


def test_last_use_is_read_from_refresh_tokens_after_upgrade(fresh_app):
    upgrade(fresh_app, STORED_LAST_USE)
    session_id = seed_session(fresh_app, stored_last_use=REFRESHED)
    upgrade(fresh_app)
    with fresh_app.app_context():
        assert get_session().get(AuthSession, session_id).last_used_at == REFRESHED


def test_downgrade_stores_last_use_again(fresh_app):
    upgrade(fresh_app)
    # Refreshed since login, by a version that no longer moves the stored column.
    seed_session(fresh_app, stored_last_use=LOGGED_IN)
    downgrade(fresh_app, STORED_LAST_USE)
    with fresh_app.app_context(), get_db().engine.connect() as connection:
        stored = connection.execute(stored_sessions.select()).one()
    assert stored.last_used_at == REFRESHED


def test_rebuilding_an_sqlite_table_keeps_the_rows_that_reference_it(fresh_app):
    if fresh_app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("PostgreSQL alters tables in place")
    upgrade(fresh_app)
    seed_session(fresh_app, stored_last_use=REFRESHED)
    with fresh_app.app_context():
        engine = get_db().engine
        # How Alembic's batch mode changes what SQLite cannot alter in place.
        with migration_lock(engine) as connection:
            operations = Operations(MigrationContext.configure(connection))
            with operations.batch_alter_table("sessions", recreate="always"):
                pass
            connection.commit()
        with engine.connect() as connection:
            assert len(connection.execute(refresh_tokens.select()).all()) == 2


def seed_users(app, names: list[str]) -> None:
    """Users with these names, created in this order a minute apart."""
    with app.app_context(), get_db().engine.begin() as connection:
        connection.execute(
            users.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "username": name,
                    "username_key": name,
                    "password_hash": "x",
                    "is_active": True,
                    "roles": [],
                    "created_at": LOGGED_IN + timedelta(minutes=number),
                    "updated_at": LOGGED_IN,
                    "password_changed_at": LOGGED_IN,
                }
                for number, name in enumerate(names)
            ],
        )


def skeletons(app) -> dict[str, str | None]:
    with app.app_context(), get_db().engine.connect() as connection:
        rows = connection.execute(
            select(users.c.username, column("username_skeleton"))
        ).all()
    return dict(rows)


def test_upgrade_gives_existing_users_their_skeletons(fresh_app):
    upgrade(fresh_app, NO_SKELETON)
    # Registered before the rule: a Cyrillic "a" in the second, "rn" in the third.
    seed_users(fresh_app, ["rtadmin", "rt\u0430dmin", "rtadrnin", "bob"])
    upgrade(fresh_app)
    # The oldest keeps the skeleton; look-alikes stay usable, with none of their own.
    assert skeletons(fresh_app) == {
        "rtadmin": "rtadrnin",
        "rt\u0430dmin": None,
        "rtadrnin": None,
        "bob": "bob",
    }
    client = fresh_app.test_client()
    for name in ["rtadmln", "b0b"]:
        response = client.post("/users", json={"username": name, "password": PASSWORD})
        assert response.status_code == 201, response.json
    response = client.post("/users", json={"username": "RTADMIN", "password": PASSWORD})
    assert response.json["code"] == "already_exists"
    response = client.post(
        "/users", json={"username": "rtadrnin", "password": PASSWORD}
    )
    assert response.json["code"] == "already_exists"
    response = client.post(
        "/users", json={"username": "b\u03bfb", "password": PASSWORD}
    )
    assert response.json["code"] == "validation_error"
    response = client.post(
        "/users", json={"username": "\u0432\u043e\u0432", "password": PASSWORD}
    )
    assert response.status_code == 201, response.json


def test_downgrade_drops_the_skeleton(fresh_app):
    upgrade(fresh_app)
    seed_users(fresh_app, ["ada"])
    downgrade(fresh_app, NO_SKELETON)
    with fresh_app.app_context():
        columns = {c["name"] for c in inspect(get_db().engine).get_columns("users")}
    assert "username_skeleton" not in columns
    upgrade(fresh_app)
    assert skeletons(fresh_app) == {"ada": "ada"}


def test_upgrade_fills_in_how_existing_sessions_were_authenticated(fresh_app):
    upgrade(fresh_app, NO_AUTH_TIME)
    session_id = seed_session(fresh_app, stored_last_use=REFRESHED)
    upgrade(fresh_app)
    with fresh_app.app_context():
        session = get_session().get(AuthSession, session_id)
        assert (session.auth_time, session.acr, session.amr) == (
            LOGGED_IN,
            "aal1",
            ["pwd"],
        )


def test_a_session_the_version_before_opens_reads_its_login_as_auth_time(fresh_app):
    upgrade(fresh_app)
    # Inserted as the version before does, while instances are rolled.
    seed_session(fresh_app, stored_last_use=LOGGED_IN)
    with fresh_app.app_context():
        found = session_store.find("b" * 64, "RS256")
        assert (found.auth_time, found.acr, found.amr) == (LOGGED_IN, "aal1", ["pwd"])


def test_downgrade_drops_the_second_factor(fresh_app):
    upgrade(fresh_app)
    seed_session(fresh_app, stored_last_use=LOGGED_IN)
    downgrade(fresh_app, NO_AUTH_TIME)
    assert not table_names(fresh_app) & {"mfa_factors", "mfa_recovery_codes"}
    with fresh_app.app_context():
        engine = get_db().engine
        columns = {c["name"] for c in inspect(engine).get_columns("sessions")}
        assert not columns & {"auth_time", "acr", "amr"}
        with engine.connect() as connection:
            assert len(connection.execute(refresh_tokens.select()).all()) == 2
