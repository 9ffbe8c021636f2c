"""The schema comes only from Alembic, and the migrations match the models."""

from __future__ import annotations

import pytest
from alembic import command
from conftest import BACKENDS
from sqlalchemy import inspect

from authsvc import create_app
from authsvc.db import get_db
from authsvc.migrations import alembic_config, current_revision, downgrade, upgrade

TABLES = {
    "alembic_version",
    "users",
    "sessions",
    "refresh_tokens",
    "throttle_counters",
    "signing_keys",
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
