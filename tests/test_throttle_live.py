"""Abuse resistance against real multi-process servers: ``authsvc serve``.

The contract says the failed-login limit (per account and per client address) is
exact for the whole service, across every worker and instance, whether the
counters live in the service's database (SQLite, PostgreSQL) or in Redis, and that
a flood of logins is answered (at worst 503 with ``Retry-After``) rather than
queued without bound or crashing a worker. Only separate gunicorn processes racing
each other can show that.

Each counter storage gets a fresh database and a shared server with
``AUTHSVC_PROXY_COUNT=1``, so a test can pick its client address with
``X-Forwarded-For`` (every request really comes from 127.0.0.1); tests that need
another instance or other settings start more servers on the same database and
counters. Redis database 14 is flushed before and after.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD, problem_body, unique_name
from live import (
    FAST_HASHING,
    FORBIDDEN_OUTPUT,
    TIMEOUT,
    LiveServer,
    Reply,
    clean_env,
    serve_command,
)

pytestmark = pytest.mark.live

REDIS_URI = "redis://127.0.0.1:6379/14"
WRONG_PASSWORD = "not the password at all"
#: The default AUTHSVC_LOGIN_RATE_LIMIT, "10 per minute".
LIMIT, WINDOW = 10, 60
#: Parallel attempts in a burst: three times the limit.
BURST = 30
#: Printed when a worker lost Redis and counted in its own memory: no longer exact.
STORAGE_LOST = "throttling storage unreachable"

_addresses = itertools.count(1)


def new_address() -> str:
    """A client address no other test of this run uses."""
    n = next(_addresses)
    return f"10.{n // 62500 % 250}.{n // 250 % 250}.{n % 250 + 1}"


class Server(LiveServer):
    """``authsvc serve``; every check of its output reads all of it again."""

    def __init__(self, cwd: Path, env: dict[str, str], workers: int) -> None:
        super().__init__(
            serve_command(workers),
            cwd=cwd,
            env=env,
            forbidden=(*FORBIDDEN_OUTPUT, STORAGE_LOST),
            incremental=False,
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        address: str | None = None,
        barrier: threading.Barrier | None = None,
    ) -> Reply:
        """One request on its own connection; with ``barrier``, sent in step.

        ``address`` is the client address the server is told (``X-Forwarded-For``,
        believed because the shared server trusts one proxy).
        """
        headers = {"X-Forwarded-For": address} if address is not None else None
        return self.request(method, path, body, headers=headers, barrier=barrier)

    def login(
        self,
        username: str,
        password: str,
        *,
        address: str | None = None,
        barrier: threading.Barrier | None = None,
    ) -> Reply:
        body = {"username": username, "password": password}
        return self.call("POST", "/login", body, address=address, barrier=barrier)

    def register(self, username: str) -> None:
        reply = self.call(
            "POST", "/users", {"username": username, "password": PASSWORD}
        )
        assert reply.status == 201, reply


def flush_redis() -> None:
    with redis.Redis.from_url(REDIS_URI) as client:
        client.flushdb()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "redis"])
def counters(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the throttling counters live; with Redis the data stays in SQLite."""
    database = "sqlite" if request.param == "redis" else request.param
    if database not in BACKENDS:
        pytest.skip(f"{database} is not in AUTHSVC_TEST_BACKENDS")
    if request.param != "redis":
        yield request.param
        return
    flush_redis()
    try:
        yield request.param
    finally:
        flush_redis()


StartServer = Callable[..., Server]


@contextmanager
def servers(counters: str, folder: Path) -> Iterator[StartServer]:
    """Start servers sharing one fresh database and the same counter storage.

    On leaving, all are stopped, and the whole output of each, shutdown included,
    must be free of tracebacks.
    """
    database = None
    if counters == "postgresql":
        database, url = create_postgres_database()
    else:
        url = f"sqlite:///{folder / 'authsvc.db'}"
    started: list[Server] = []

    def start(workers: int = 4, **settings: str) -> Server:
        base = {
            "SECRET_KEY": "throttle-test-secret-" + "t" * 40,
            "DATABASE_URL": url,
            "REGISTRATION_RATE_LIMIT": "10000 per minute",
        }
        if counters == "redis":
            base["RATELIMIT_STORAGE_URI"] = REDIS_URI
        env = clean_env(**{**base, **settings})
        cwd = folder / f"server{len(started)}"
        cwd.mkdir()
        started.append(Server(cwd, env, workers))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:  # all at once: a graceful stop takes a while
            server.terminate()
        for server in started:
            server.stop()
        if database is not None:
            drop_postgres_database(database)
    for server in started:
        server.assert_clean_output()


@pytest.fixture(scope="module")
def fleet(counters: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start servers on the module's database and counters; all stop at its end.

    The tests share counters, so each one logs in from addresses (and as users)
    of its own, or under a limit of its own (the counter keys name the limit).
    """
    with servers(counters, tmp_path_factory.mktemp(f"throttle-{counters}")) as start:
        yield start


@pytest.fixture(scope="module")
def server(fleet: StartServer) -> Server:
    """Four workers, the default limit, one trusted proxy."""
    return fleet(PROXY_COUNT="1", **FAST_HASHING)


def in_parallel(calls: list[Callable[[threading.Barrier], Reply]]) -> list[Reply]:
    """Run ``calls`` (each given the shared barrier) at once; replies in order."""
    barrier = threading.Barrier(len(calls), timeout=TIMEOUT)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call, barrier) for call in calls]
        return [future.result(timeout=3 * TIMEOUT) for future in futures]


def statuses(replies: list[Reply]) -> Counter:
    return Counter((reply.status, reply.code) for reply in replies)


def assert_problem(
    reply: Reply, status: int, code: str, *, detail: str | None = None
) -> None:
    """``reply`` is exactly the contract's problem+json for ``code``."""
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/problem+json", reply
    assert reply.body == problem_body(code, status, detail=detail)


def assert_retry_after(reply: Reply, window: int) -> None:
    """A whole number of seconds, at most the window (plus one for rounding up).

    With Redis the service reads the window's end from a whole-second TTL and
    rounds the rest up, so a fresh 60-second window may say 61.
    """
    value = reply.headers.get("retry-after")
    assert value is not None and value.isdigit(), reply
    assert 1 <= int(value) <= window + 1, reply


def assert_limited_burst(replies: list[Reply], allowed: int) -> None:
    """No 5xx; at most ``allowed`` failures, the rest refused with Retry-After."""
    assert not [reply for reply in replies if reply.status >= 500], replies
    failed = [reply for reply in replies if reply.status == 401]
    assert len(failed) <= allowed, statuses(replies)
    for reply in failed:
        assert_problem(reply, 401, "invalid_credentials")
    for reply in replies:
        if reply.status != 401:
            assert_problem(
                reply, 429, "rate_limited", detail="Too many attempts; try again later."
            )
            assert_retry_after(reply, WINDOW)


# --- exactness ----------------------------------------------------------------


def test_one_account_from_one_address_gets_exactly_the_limit(server):
    username = unique_name("victim")
    server.register(username)

    # No X-Forwarded-For: the address is 127.0.0.1, which no other test logs in as.
    replies = in_parallel(
        [
            lambda barrier: server.login(username, WRONG_PASSWORD, barrier=barrier)
            for _ in range(BURST)
        ]
    )

    server.assert_clean_output()
    assert_limited_burst(replies, LIMIT)
    # The limit holds even for the right password.
    reply = server.login(username, PASSWORD)
    assert_problem(
        reply, 429, "rate_limited", detail="Too many attempts; try again later."
    )
    assert_retry_after(reply, WINDOW)
    assert statuses(replies) == {
        (401, "invalid_credentials"): LIMIT,
        (429, "rate_limited"): BURST - LIMIT,
    }


def test_account_limit_is_exact_whatever_the_address(server):
    username = unique_name("victim")
    server.register(username)

    replies = in_parallel(
        [
            lambda barrier, address=address: server.login(
                username, WRONG_PASSWORD, address=address, barrier=barrier
            )
            for address in [new_address() for _ in range(BURST)]
        ]
    )

    server.assert_clean_output()
    assert_limited_burst(replies, LIMIT)
    assert statuses(replies) == {
        (401, "invalid_credentials"): LIMIT,
        (429, "rate_limited"): BURST - LIMIT,
    }
    reply = server.login(username, PASSWORD, address=new_address())
    assert_problem(
        reply, 429, "rate_limited", detail="Too many attempts; try again later."
    )
    assert_retry_after(reply, WINDOW)
    server.assert_clean_output()


def test_address_limit_is_exact_whatever_the_account(server):
    username = unique_name("bystander")
    server.register(username)
    address = new_address()

    # Usernames nobody has: a failure costs the same as for a real account.
    replies = in_parallel(
        [
            lambda barrier, guess=guess: server.login(
                guess, WRONG_PASSWORD, address=address, barrier=barrier
            )
            for guess in [unique_name("guess") for _ in range(BURST)]
        ]
    )

    server.assert_clean_output()
    assert_limited_burst(replies, LIMIT)
    assert statuses(replies) == {
        (401, "invalid_credentials"): LIMIT,
        (429, "rate_limited"): BURST - LIMIT,
    }
    reply = server.login(username, PASSWORD, address=address)
    assert_problem(
        reply, 429, "rate_limited", detail="Too many attempts; try again later."
    )
    assert server.login(username, PASSWORD, address=new_address()).status == 200
    server.assert_clean_output()


def test_refused_attempts_are_not_failed_logins(server):
    victim, bystander = unique_name("victim"), unique_name("bystander")
    server.register(victim)
    server.register(bystander)
    attacker, office = new_address(), new_address()
    for _ in range(LIMIT):
        reply = server.login(victim, WRONG_PASSWORD, address=attacker)
        assert_problem(reply, 401, "invalid_credentials")
    for _ in range(LIMIT):
        reply = server.login(victim, WRONG_PASSWORD, address=office)
        assert_problem(
            reply, 429, "rate_limited", detail="Too many attempts; try again later."
        )

    # The office address has had no failed login at all.
    reply = server.login(bystander, WRONG_PASSWORD, address=office)
    server.assert_clean_output()
    assert_problem(reply, 401, "invalid_credentials")
    assert server.login(bystander, PASSWORD, address=office).status == 200


def test_instances_share_the_counters(server, fleet):
    # Another instance on the same database and the same counter storage.
    other = fleet(PROXY_COUNT="1", **FAST_HASHING)
    username = unique_name("shared")
    server.register(username)
    address = new_address()

    replies = in_parallel(
        [
            lambda barrier, instance=instance: instance.login(
                username, WRONG_PASSWORD, address=address, barrier=barrier
            )
            for instance in [server, other] * (LIMIT // 2)
        ]
    )

    assert statuses(replies) == {(401, "invalid_credentials"): LIMIT}, replies
    # Each instance saw only five failures: only shared counters refuse these.
    for instance in (server, other):
        reply = instance.login(username, WRONG_PASSWORD, address=address)
        assert_problem(
            reply, 429, "rate_limited", detail="Too many attempts; try again later."
        )
        assert_retry_after(reply, WINDOW)
    # The account is locked on both, from anywhere, even with the right password.
    for instance in (server, other):
        reply = instance.login(username, PASSWORD, address=new_address())
        assert_problem(
            reply, 429, "rate_limited", detail="Too many attempts; try again later."
        )
    server.assert_clean_output()
    other.assert_clean_output()


# --- floods -------------------------------------------------------------------


def test_login_flood_is_answered_and_the_server_survives(fleet):
    # Production argon2id cost (no AUTHSVC_ARGON2_*): hashing is what is stressed.
    # All from 127.0.0.1, counted under a limit (so under keys) of its own.
    server = fleet(workers=2, LOGIN_RATE_LIMIT="1000 per minute")
    usernames = [unique_name("flood") for _ in range(5)]
    for username in usernames:
        server.register(username)
    # A running server: its signing key exists before the flood (the first logins
    # on a fresh database are about key generation, not hashing).
    assert server.login(usernames[0], PASSWORD).status == 200
    floods = 100

    started = time.monotonic()
    replies = in_parallel(
        [
            lambda barrier, i=i: server.login(
                usernames[i % len(usernames)],
                PASSWORD if i % 2 else WRONG_PASSWORD,
                barrier=barrier,
            )
            for i in range(floods)
        ]
    )
    elapsed = time.monotonic() - started

    assert elapsed < 2 * TIMEOUT, elapsed
    seen = statuses(replies)
    assert {reply.status for reply in replies} <= {200, 401, 429, 503}, seen
    for i, reply in enumerate(replies):
        if reply.status == 200:
            assert i % 2, reply  # only a right password logs in
            assert reply.body["token_type"] == "Bearer"
        elif reply.status == 401:
            assert not i % 2, reply
            assert_problem(reply, 401, "invalid_credentials")
        elif reply.status == 429:
            assert_problem(reply, 429, "rate_limited")
            assert_retry_after(reply, WINDOW)
        else:
            assert_problem(reply, 503, "service_unavailable")
            assert_retry_after(reply, WINDOW)
    assert server.alive(), server.output()
    assert server.call("GET", "/health").status == 200
    server.assert_clean_output()
