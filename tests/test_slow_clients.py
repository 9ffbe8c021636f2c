"""Idle and slow connections against ``authsvc serve`` with its default workers.

A connection that has not sent a whole request must cost a socket, not a
worker: while many sockets sit idle or trickle their request a byte at a time,
everyone else still gets answers at once. The same holds through the nginx
configuration the compose deployment ships (``deploy/nginx.conf``), run here
with Debian's nginx on loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD
from live import BIN, FAST_HASHING, UNTHROTTLED, LiveServer, clean_env, free_port
from nginx import running_nginx

from authsvc.server import REQUEST_READ_TIMEOUT

pytestmark = pytest.mark.live

IDLE = 100
TRICKLING = 20
#: Seconds between two bytes of a trickling connection.
TRICKLE_INTERVAL = 0.5
#: Seconds an answer may take while the slow connections are held.
ANSWER_WITHIN = 1.0
PROBES = 5
#: Longest the trickling thread may run, whatever happens to the test.
TRICKLE_FOR = 30.0
NGINX_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """``authsvc serve`` with no ``--workers``, on a database of its own."""
    folder = tmp_path_factory.mktemp("slow")
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        name, url = create_postgres_database()
    env = clean_env(
        SECRET_KEY="slow-clients-secret-" + "s" * 40,
        DATABASE_URL=url,
        **FAST_HASHING,
        **UNTHROTTLED,
    )
    try:
        with LiveServer(
            [str(BIN / "authsvc"), "serve", "--port", "{port}"], cwd=folder, env=env
        ) as live:
            yield live
    finally:
        if name is not None:
            drop_postgres_database(name)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def trickle(
    sockets: list[socket.socket],
    head: bytes,
    request: bytes,
    stop: threading.Event,
    started: threading.Event,
) -> None:
    """Send ``head`` at once, then ``request`` a byte per interval until ``stop``."""
    deadline = time.monotonic() + TRICKLE_FOR
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.sendall(head)
    for index in range(len(request)):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(request[index : index + 1])
        if index == 1:
            started.set()
        if stop.wait(TRICKLE_INTERVAL) or time.monotonic() > deadline:
            break
    started.set()


def timed_get(
    port: int, path: str, token: str | None = None
) -> tuple[float, int, object]:
    """Seconds, status and JSON body of ``GET path``; the socket times out at 1 s."""
    headers = {"Connection": "close"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    began = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = json.loads(response.read())
        return time.monotonic() - began, response.status, body
    finally:
        connection.close()


@contextlib.contextmanager
def slow_connections(port: int) -> Iterator[None]:
    """``IDLE`` silent sockets and ``TRICKLING`` ones sending a request bytewise."""
    opened: list[socket.socket] = []
    senders: list[threading.Thread] = []
    stop = threading.Event()
    started = threading.Event()
    try:
        opened.extend(connect(port) for _ in range(IDLE))
        trickling = [connect(port) for _ in range(TRICKLING)]
        opened.extend(trickling)
        # Half stall in their header, half in the body they announced.
        header = (
            b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        )
        body = b'{"username": "nobody", "password": "' + b"p" * 100
        post = (
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (len(body) + 2)
        )
        half = TRICKLING // 2
        for group, head, request in (
            (trickling[:half], b"", header),
            (trickling[half:], post, body),
        ):
            senders.append(
                threading.Thread(
                    target=trickle,
                    args=(group, head, request, stop, started),
                    daemon=True,
                )
            )
            senders[-1].start()
        assert started.wait(TRICKLE_FOR)
        yield
    finally:
        stop.set()
        for sender in senders:
            sender.join(TRICKLE_FOR)
        for sock in opened:
            sock.close()


@pytest.fixture(scope="module")
def token(server) -> str:
    """An access token of a user of ``server``."""
    body = {"username": "patient", "password": PASSWORD}
    assert server.request("POST", "/users", body).status == 201
    return server.request("POST", "/login", body).body["access_token"]


def assert_answered_at_once(port: int, token: str, me: dict) -> None:
    """GET /health/live and GET /me, several times, each answered within 1 s."""
    with slow_connections(port):
        for _ in range(PROBES):
            seconds, status, body = timed_get(port, "/health/live")
            assert (status, body) == (200, {"status": "ok"}), seconds
            assert seconds < ANSWER_WITHIN
            seconds, status, body = timed_get(port, "/me", token)
            assert (status, body) == (200, me), seconds
            assert seconds < ANSWER_WITHIN


def test_others_are_answered_at_once_while_slow_connections_are_held(server, token):
    me = server.request("GET", "/me", token=token).body
    assert_answered_at_once(server.port, token, me)
    server.assert_clean_output()


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server.port) as sock:
        sock.settimeout(REQUEST_READ_TIMEOUT + 5)
        began = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        assert time.monotonic() - began >= REQUEST_READ_TIMEOUT - 1


@pytest.fixture(scope="module")
def nginx(server, tmp_path_factory) -> Iterator[int]:
    """Debian's nginx with the shipped server block, in front of ``server``."""
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    block = NGINX_CONF.read_text()
    for shipped, here in (
        ("server authsvc:8000;", f"server 127.0.0.1:{server.port};"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
    ):
        assert shipped in block
        block = block.replace(shipped, here)
    with running_nginx(folder, block, port=port, ready=("/health/live", 200)):
        yield port


def test_through_nginx_others_are_answered_at_once(server, nginx, token):
    me = server.request("GET", "/me", token=token).body
    assert_answered_at_once(nginx, token, me)


def test_nginx_refuses_a_large_body_in_the_service_shape(nginx):
    connection = http.client.HTTPConnection("127.0.0.1", nginx, timeout=5)
    try:
        connection.request(
            "POST",
            "/login",
            body=b"x" * (64 * 1024 + 1),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413
    assert response.getheader("Content-Type") == "application/problem+json"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert body == {
        "type": "about:blank",
        "title": "Request Entity Too Large",
        "status": 413,
        "detail": "The request body is too large.",
        "code": "payload_too_large",
    }
