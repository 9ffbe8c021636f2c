"""The authsvc command: users create, db, export-openapi."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PASSWORD
from sqlalchemy import select

from authsvc.db import get_session
from authsvc.migrations import upgrade
from authsvc.models import User


def stored_user(app, username: str) -> User | None:
    with app.app_context():
        return get_session().scalar(select(User).where(User.username == username))


def test_users_create_from_stdin(app, runner, client):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "Root",
            "--email",
            "root@example.com",
            "--role",
            "admin",
            "--role",
            "ops",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("created user Root (")
    user = stored_user(app, "Root")
    assert (user.email, user.roles) == ("root@example.com", ["admin", "ops"])
    response = client.post("/login", json={"username": "root", "password": PASSWORD})
    assert response.status_code == 200


def test_users_create_prompts_twice(app, runner):
    result = runner.invoke(
        args=["users", "create", "bob"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert stored_user(app, "bob") is not None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("bob", "short", "password must be at least 8 characters"),
        ("bob", "password123", "password is too common"),
        ("b", PASSWORD, "username must be 3 to 64 characters"),
    ],
)
def test_users_create_applies_the_policy(app, runner, username, password, message):
    result = runner.invoke(
        args=["users", "create", username, "--password-stdin"], input=password + "\n"
    )
    assert result.exit_code == 1
    assert message in result.output
    assert stored_user(app, username) is None


def test_users_create_refuses_a_taken_name(runner, register):
    register("alice")
    result = runner.invoke(
        args=["users", "create", "ALICE", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 1
    assert "already taken" in result.output


def test_db_current_names_the_head(runner):
    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0
    assert result.output.strip() not in {"", "none"}


def test_keys_rotate_on_a_fresh_database_leaves_a_key_signing(
    make_app, empty_database, database_url
):
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    app = make_app(DATABASE_URL=empty_database(backend))
    upgrade(app)
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    states = [
        line.split("\t")[2]
        for line in app.test_cli_runner()
        .invoke(args=["keys", "list"])
        .output.splitlines()
    ]
    assert states == ["active", "published"]


def test_database_errors_are_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env["AUTHSVC_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    env["AUTHSVC_SECRET_KEY"] = "s" * 40
    result = subprocess.run(
        [str(Path(sys.executable).parent / "authsvc"), "keys", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "authsvc: database error: no such table: signing_keys "
        "(is it reachable, and migrated with `authsvc db upgrade`?)"
    ]
