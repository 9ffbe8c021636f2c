"""``authsvc serve`` on a fresh directory, with no configuration at all, just works."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from helpers import PASSWORD
from live import BIN, LiveServer, clean_env

pytestmark = pytest.mark.live


def call(
    server: LiveServer, method: str, path: str, body=None, token=None
) -> tuple[int, Any]:
    """Status and JSON body of one request."""
    reply = server.request(method, path, body, token=token)
    return reply.status, reply.body


@pytest.fixture
def serve(tmp_path):
    """Start ``args`` in ``tmp_path`` with no AUTHSVC_* variables unless given."""
    servers: list[LiveServer] = []

    def start(*args: str, env: dict | None = None) -> LiveServer:
        servers.append(LiveServer(args, cwd=tmp_path, env=env or clean_env()))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_serve_with_no_configuration(serve, tmp_path):
    server = serve(str(BIN / "authsvc"), "serve", "--port", "{port}", "--workers", "2")

    status, user = call(
        server, "POST", "/users", {"username": "alice", "password": PASSWORD}
    )
    assert status == 201, user
    status, tokens = call(
        server, "POST", "/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200
    assert call(server, "GET", "/me", token=tokens["access_token"]) == (200, user)
    status, renewed = call(
        server, "POST", "/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200
    assert call(server, "POST", "/logout", token=renewed["access_token"]) == (204, None)
    status, body = call(server, "GET", "/me", token=renewed["access_token"])
    assert (status, body["code"]) == (401, "token_revoked")

    instance = tmp_path / "instance"
    assert (instance / "authsvc.db").is_file()
    secret_file = instance / "secret_key"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert oct(secret_file.stat().st_mode)[-3:] == "600"

    server.stop()
    output = server.output()
    assert "development setup" in output
    assert "AUTHSVC_SECRET_KEY" in output
    assert secret not in output
    assert PASSWORD not in output


def test_gunicorn_wsgi_entry_point(serve, tmp_path):
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'wsgi.db'}", SECRET_KEY="w" * 40
    )
    subprocess.run([str(BIN / "authsvc"), "db", "upgrade"], env=env, check=True)
    server = serve(
        str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "authsvc.wsgi:app", env=env
    )
    status, _ = call(
        server, "POST", "/users", {"username": "bob", "password": PASSWORD}
    )
    assert status == 201


def test_serve_stops_on_bad_configuration(tmp_path):
    env = clean_env(REFRESH_TOKEN_TTL="abc")
    result = subprocess.run(
        [str(BIN / "authsvc"), "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "authsvc: configuration error: AUTHSVC_REFRESH_TOKEN_TTL must be a whole "
        "number, not 'abc'"
    ]
