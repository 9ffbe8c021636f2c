"""GET /auth/forward behind a real nginx: ``auth_request`` in front of an upstream.

Debian's nginx is started from a configuration written here, on a free loopback
port, in front of a small echo upstream (it answers with the headers it got), and
asks ``authsvc serve`` about each request, as the README's snippet does.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD
from live import (
    BIN,
    FAST_HASHING,
    UNTHROTTLED,
    LiveServer,
    clean_env,
    free_port,
    serve_command,
)
from nginx import running_nginx

pytestmark = pytest.mark.live

CHALLENGE = 'Bearer realm="authsvc"'
INVALID = 'Bearer realm="authsvc", error="invalid_token"'
IDENTITY = (
    "User",
    "Preferred-Username",
    "Email",
    "Groups",
    "Session",
)
#: Requests sent through nginx at once.
CONCURRENT = 50


def forward_location(name: str, authsvc: int, query: str = "") -> str:
    """An internal location that asks authsvc, as the README shows."""
    return f"""
    location = {name} {{
        internal;
        proxy_pass http://127.0.0.1:{authsvc}/auth/forward{query};
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
    }}"""


def protected_location(prefix: str, check: str, upstream: int) -> str:
    """A location that lets a request through to the upstream if authsvc says so."""
    variables = "\n".join(
        f"        auth_request_set $auth_{i} $upstream_http_x_auth_request_"
        f"{name.lower().replace('-', '_')};\n"
        f"        proxy_set_header X-Auth-Request-{name} $auth_{i};"
        for i, name in enumerate(IDENTITY)
    )
    return f"""
    location {prefix} {{
        auth_request {check};
{variables}
        proxy_pass http://127.0.0.1:{upstream};
    }}"""


class Echo(BaseHTTPRequestHandler):
    """Answer any request with the path and headers it arrived with, as JSON."""

    seen: ClassVar[list[dict]] = []

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        # Header values arrive as Latin-1 text of their bytes: read them as UTF-8.
        headers = {
            name.lower(): value.encode("latin-1").decode("utf-8")
            for name, value in self.headers.items()
        }
        body = json.dumps({"path": self.path, "headers": headers}).encode()
        self.seen.append(headers)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """The echo upstream, in a thread of this process."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """``authsvc serve`` with two workers, on a database of its own."""
    folder = tmp_path_factory.mktemp("forward")
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        name, url = create_postgres_database()
    env = clean_env(
        SECRET_KEY="forward-secret-" + "f" * 40,
        DATABASE_URL=url,
        **FAST_HASHING,
        **UNTHROTTLED,
    )
    try:
        with LiveServer(serve_command(2), cwd=folder, env=env) as live:
            yield live
    finally:
        if name is not None:
            drop_postgres_database(name)


@pytest.fixture(scope="module")
def proxy(server, upstream, tmp_path_factory) -> Iterator[int]:
    """nginx: ``/app/`` needs a token, ``/ops/`` also the role ``admin`` or ``ops``."""
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    servers = f"""
server {{
    listen 127.0.0.1:{port};
    location = /ready {{ return 204; }}
{forward_location("/_authsvc", server.port)}
{forward_location("/_authsvc_ops", server.port, "?role=admin&role=ops")}
{protected_location("/app/", "/_authsvc", upstream)}
{protected_location("/ops/", "/_authsvc_ops", upstream)}
}}
"""
    with running_nginx(folder, servers, port=port, ready=("/ready", 204)):
        yield port


def through(port: int, method: str, path: str, headers: dict | None = None):
    """One request through nginx: status, headers, and the JSON body if any."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        body = b"{}" if method == "POST" else None
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, response.headers, json.loads(raw) if is_json else None
    finally:
        connection.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def account(server, *roles: str, email: bool = False) -> dict:
    """A new user, logged in: their id, name, e-mail (if ``email``) and tokens."""
    username = f"fw{uuid.uuid4().hex[:10]}"
    address = f"{username}@example.com" if email else None
    if roles:
        args = [str(BIN / "authsvc"), "users", "create", username, "--password-stdin"]
        for role in roles:
            args += ["--role", role]
        if address:
            args += ["--email", address]
        subprocess.run(
            args,
            input=PASSWORD + "\n",
            text=True,
            cwd=server.cwd,
            env=server.env,
            check=True,
            capture_output=True,
        )
    else:
        body = {"username": username, "password": PASSWORD}
        if address:
            body["email"] = address
        assert server.request("POST", "/users", body).status == 201
    tokens = server.request(
        "POST", "/login", {"username": username, "password": PASSWORD}
    ).body
    me = server.request("GET", "/me", token=tokens["access_token"]).body
    return {**tokens, "id": me["id"], "username": username, "email": address}


def identity_of(user: dict, *, groups: str = "") -> dict:
    """What the upstream must see of ``user``: nginx drops a header set empty."""
    seen = {
        "x-auth-request-user": user["id"],
        "x-auth-request-preferred-username": user["username"],
        "x-auth-request-groups": groups,
        "x-auth-request-email": user["email"],
        "x-auth-request-session": user["session_id"],
    }
    return {name: value for name, value in seen.items() if value}


def identity_seen(body: dict) -> dict:
    return {
        name: value
        for name, value in body["headers"].items()
        if name.startswith("x-auth-request-")
    }


def test_no_token_is_refused_before_the_upstream(proxy):
    before = len(Echo.seen)
    status, headers, _ = through(proxy, "GET", "/app/page")
    assert status == 401
    assert headers["WWW-Authenticate"] == CHALLENGE
    assert len(Echo.seen) == before


def test_a_forged_token_is_refused(proxy):
    status, headers, _ = through(proxy, "GET", "/app/page", bearer("a.b.c"))
    assert status == 401
    assert headers["WWW-Authenticate"] == INVALID


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_valid_token_passes_and_the_upstream_sees_the_user(server, proxy, method):
    user = account(server, email=True)
    status, _, body = through(
        proxy, method, "/app/page?x=1", bearer(user["access_token"])
    )
    assert status == 200
    assert body["path"] == "/app/page?x=1"
    assert identity_seen(body) == identity_of(user)


def test_forged_identity_headers_are_overwritten(server, proxy):
    user = account(server)
    forged = {f"X-Auth-Request-{name}": "forged" for name in IDENTITY}
    forged["X-Auth-Request-Groups"] = "admin"
    status, _, body = through(
        proxy, "GET", "/app/page", {**forged, **bearer(user["access_token"])}
    )
    assert status == 200
    # No e-mail, no roles: the forged ones are dropped, not passed on.
    assert identity_seen(body) == identity_of(user)


def test_a_logout_takes_effect_at_once(server, proxy):
    user = account(server)
    headers = bearer(user["access_token"])
    assert through(proxy, "GET", "/app/page", headers)[0] == 200
    assert server.request("POST", "/logout", token=user["access_token"]).status == 204
    status, answer, _ = through(proxy, "GET", "/app/page", headers)
    assert status == 401
    assert answer["WWW-Authenticate"] == INVALID


@pytest.mark.parametrize(
    ("roles", "status"),
    [((), 403), (("editor",), 403), (("ops",), 200), (("admin", "editor"), 200)],
)
def test_a_role_requirement(server, proxy, roles, status):
    user = account(server, *roles)
    answered, _, body = through(
        proxy, "GET", "/ops/panel", bearer(user["access_token"])
    )
    assert answered == status
    if status == 200:
        assert identity_seen(body) == identity_of(user, groups=",".join(roles))


def test_concurrent_requests_each_pass_as_their_own_user(server, proxy):
    users = [account(server) for _ in range(5)]
    barrier = threading.Barrier(CONCURRENT)
    results: list = [None] * CONCURRENT

    def send(index: int) -> None:
        user = users[index % len(users)]
        token = user["access_token"] if index % 10 else "a.b.c"
        barrier.wait()
        results[index] = through(proxy, "GET", f"/app/{index}", bearer(token))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, (status, _, body) in enumerate(results):
        if index % 10 == 0:
            assert status == 401, index
        else:
            assert status == 200, index
            assert body["path"] == f"/app/{index}"
            assert identity_seen(body) == identity_of(users[index % len(users)])
    server.assert_clean_output()
