"""Races against a real multi-process server: ``authsvc serve --workers 4``.

The Flask test client runs one request at a time, so it cannot show what happens
when several gunicorn workers touch the same refresh token or username at once.
Each backend gets its own servers (one per reuse-grace setting, shared by the
tests of this module); every test registers its own uniquely named users.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD, unique_name
from live import (
    FAST_HASHING,
    TIMEOUT,
    UNTHROTTLED,
    LiveServer,
    clean_env,
    serve_command,
)

pytestmark = pytest.mark.live

THREADS = 20

Reply = tuple[int, Any]


def server_env(database_url: str, grace: int) -> dict[str, str]:
    return clean_env(
        SECRET_KEY="concurrency-test-secret-" + "c" * 40,
        REFRESH_REUSE_GRACE=str(grace),
        DATABASE_URL=database_url,
        **FAST_HASHING,
        **UNTHROTTLED,
    )


class Server(LiveServer):
    """A live server whose replies are ``(status, JSON body)``."""

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        token: str | None = None,
        barrier: threading.Barrier | None = None,
    ) -> Reply:
        """One request on its own connection; with ``barrier``, sent in step."""
        reply = self.request(method, path, body, token=token, barrier=barrier)
        return reply.status, reply.body


def in_parallel(server: Server, requests: list[tuple]) -> list[Reply]:
    """Send ``(method, path, body, token)`` requests at once; replies in order."""
    barrier = threading.Barrier(len(requests), timeout=TIMEOUT)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [
            pool.submit(server.call, *request, barrier=barrier) for request in requests
        ]
        return [future.result(timeout=2 * TIMEOUT) for future in futures]


def statuses(replies: list[Reply]) -> Counter:
    return Counter(status for status, _ in replies)


def assert_no_server_error(replies: list[Reply]) -> None:
    errors = [reply for reply in replies if reply[0] >= 500]
    assert not errors, errors


def is_refused(reply: Reply, status: int, code: str | None = None) -> bool:
    return reply[0] == status and (code is None or reply[1]["code"] == code)


def login_new_user(server: Server) -> dict:
    """Register a fresh user, log in, return the tokens."""
    username = unique_name("user")
    body = {"username": username, "password": PASSWORD}
    status, user = server.call("POST", "/users", body)
    assert status == 201, user
    status, tokens = server.call("POST", "/login", body)
    assert status == 200, tokens
    return tokens


# --- servers ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} is not in AUTHSVC_TEST_BACKENDS")
    return request.param


def start_server(backend: str, grace: int, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"serve-{backend}-grace{grace}")
    database = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        database, url = create_postgres_database()
    try:
        env = server_env(url, grace)
        with Server(serve_command(workers=4), cwd=folder, env=env) as server:
            yield server
        # Everything printed since the last test's check, shutdown included.
        server.assert_clean_output()
    finally:
        if database is not None:
            drop_postgres_database(database)


@pytest.fixture(scope="module")
def strict_server(backend, tmp_path_factory):
    """``AUTHSVC_REFRESH_REUSE_GRACE=0``: any second presentation is reuse."""
    yield from start_server(backend, 0, tmp_path_factory)


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    """The default grace window of 10 seconds."""
    yield from start_server(backend, 10, tmp_path_factory)


# --- tests ------------------------------------------------------------------


def test_refresh_race_without_grace_rotates_at_most_once(strict_server):
    tokens = login_new_user(strict_server)
    body = {"refresh_token": tokens["refresh_token"]}

    replies = in_parallel(strict_server, [("POST", "/refresh", body, None)] * THREADS)

    strict_server.assert_clean_output()
    assert_no_server_error(replies)
    issued = [pair for status, pair in replies if status == 200]
    refused = [reply for reply in replies if reply[0] != 200]
    assert len(issued) <= 1, statuses(replies)
    assert len({pair["refresh_token"] for pair in issued}) <= 1
    assert all(is_refused(r, 401, "invalid_refresh_token") for r in refused), refused

    # Every refused caller presented a spent token: reuse, so the whole session is
    # revoked, the winner's new tokens included. No token of it works any more.
    for pair in [tokens, *issued]:
        reply = strict_server.call(
            "POST", "/refresh", {"refresh_token": pair["refresh_token"]}
        )
        assert is_refused(reply, 401, "invalid_refresh_token"), reply
        reply = strict_server.call("GET", "/me", token=pair["access_token"])
        assert is_refused(reply, 401), reply
    strict_server.assert_clean_output()


def test_refresh_race_within_grace_gives_everyone_the_same_successor(server):
    tokens = login_new_user(server)
    body = {"refresh_token": tokens["refresh_token"]}

    replies = in_parallel(server, [("POST", "/refresh", body, None)] * THREADS)

    server.assert_clean_output()
    assert statuses(replies) == {200: THREADS}, replies
    bodies = [body for _, body in replies]
    successors = {body["refresh_token"] for body in bodies}
    assert len(successors) == 1, successors
    (successor,) = successors
    assert successor != tokens["refresh_token"]
    assert {body["session_id"] for body in bodies} == {tokens["session_id"]}
    me = server.call("GET", "/me", token=tokens["access_token"])
    assert me[0] == 200, me
    for body in bodies:
        assert server.call("GET", "/me", token=body["access_token"]) == me

    status, rotated = server.call("POST", "/refresh", {"refresh_token": successor})
    assert status == 200, rotated
    assert rotated["refresh_token"] not in {successor, tokens["refresh_token"]}
    assert rotated["session_id"] == tokens["session_id"]
    assert server.call("GET", "/me", token=rotated["access_token"]) == me
    server.assert_clean_output()


def test_logout_racing_refreshes_leaves_nothing_alive(server):
    tokens = login_new_user(server)
    refresh = ("POST", "/refresh", {"refresh_token": tokens["refresh_token"]}, None)
    logout = ("POST", "/logout", None, tokens["access_token"])
    requests = [refresh] * 5 + [logout] + [refresh] * 5

    replies = in_parallel(server, requests)

    server.assert_clean_output()
    assert_no_server_error(replies)
    assert replies[5] == (204, None), replies[5]
    refreshed = replies[:5] + replies[6:]
    for reply in refreshed:
        assert reply[0] == 200 or is_refused(reply, 401, "invalid_refresh_token")
    issued = [body for status, body in refreshed if status == 200]
    for pair in [tokens, *issued]:
        reply = server.call("GET", "/me", token=pair["access_token"])
        assert is_refused(reply, 401), reply
        reply = server.call(
            "POST", "/refresh", {"refresh_token": pair["refresh_token"]}
        )
        assert is_refused(reply, 401, "invalid_refresh_token"), reply
    server.assert_clean_output()


def assert_one_registration_wins(server, variants):
    """Race registrations of ``variants``, taken in turn: one 201, the rest 409."""
    requests = [
        ("POST", "/users", {"username": variants[i % 4], "password": PASSWORD}, None)
        for i in range(THREADS)
    ]

    replies = in_parallel(server, requests)

    server.assert_clean_output()
    assert_no_server_error(replies)
    assert statuses(replies) == {201: 1, 409: THREADS - 1}, replies
    assert all(is_refused(r, 409, "already_exists") for r in replies if r[0] != 201)
    server.assert_clean_output()


def test_registration_race_creates_one_account(server):
    name = unique_name("racer")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in name)
    variants = [name, name.upper(), name.capitalize(), fullwidth]
    assert_one_registration_wins(server, variants)


@pytest.mark.parametrize("attempt", range(5))
def test_registration_race_of_look_alike_names_creates_one_account(server, attempt):
    # Hex digits and letters are Latin; "m", "rn" and "rn" spelt twice look alike.
    tail = uuid.uuid4().hex[:10]
    variants = [f"{m}{n}look{tail}" for m in ("m", "rn") for n in ("m", "rn")]
    assert_one_registration_wins(server, variants)
