"""The generated secret is written only when something needs a key.

With no ``AUTHSVC_SECRET_KEY`` the service keeps a generated one in the instance
folder. Asking ``authsvc --help`` in some folder, or running a command that
signs nothing, must leave no ``instance/secret_key`` (nor an ``instance/``)
behind there.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import PASSWORD
from live import BIN, clean_env

from authsvc import create_app
from authsvc.keys import SECRET_FILE_NAME, get_keys
from authsvc.migrations import upgrade


def authsvc(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "authsvc"), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        ["serve", "--help"],
        ["users", "--help"],
        ["users", "create", "--help"],
        ["db", "--help"],
        ["keys", "--help"],
        ["no-such-command"],
    ],
    ids=" ".join,
)
def test_help_leaves_the_folder_empty(tmp_path, args):
    result = authsvc(*args, cwd=tmp_path)
    assert result.returncode in (0, 2), result.stderr
    assert "Usage: authsvc" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["db", "current"], ["export-openapi", "doc.json"]]
)
def test_commands_that_sign_nothing_write_no_secret(tmp_path, args):
    result = authsvc(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "instance" / SECRET_FILE_NAME).exists()
    assert "generated a new secret key" not in result.stderr


def test_the_secret_is_made_when_a_key_is_first_needed(tmp_path):
    instance = tmp_path / "instance"
    settings = {"INSTANCE_PATH": str(instance), "TESTING": True}
    app = create_app(settings)
    upgrade(app)
    assert not (instance / SECRET_FILE_NAME).exists()
    client = app.test_client()
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert not (instance / SECRET_FILE_NAME).exists()
    tokens = client.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    ).json
    secret = (instance / SECRET_FILE_NAME).read_text().strip()
    assert app.config["SECRET_KEY"] == secret
    assert oct((instance / SECRET_FILE_NAME).stat().st_mode)[-3:] == "600"
    # A second app (another worker) on the folder reads the same secret and so
    # accepts the first one's tokens.
    other = create_app(settings)
    response = other.test_client().get(
        "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200, response.json
    assert other.config["SECRET_KEY"] == secret
    with app.app_context():
        assert get_keys() is get_keys()
    for made in (app, other):
        made.extensions["authsvc.db"].dispose()
