"""Several instances behind a load balancer, sharing PostgreSQL and Redis.

Two ``authsvc serve`` processes start at once against one empty database: one
migrates and makes the first signing key, the other finds both done. Then a
token or a logout on one is seen by the other at once, the login throttle counts
across both, and a refresh token raced across both rotates once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import redis
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD
from live import FAST_HASHING, LiveServer, clean_env, serve_command
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.live

REDIS_URL = "redis://127.0.0.1:6379/12"
WRONG = "not the password at all"
_addresses = itertools.count(1)


def new_address() -> str:
    """A client address of its own, so each test has fresh per-address counters."""
    return f"198.51.100.{next(_addresses)}"


@pytest.fixture(scope="module")
def database():
    if "postgresql" not in BACKENDS:
        pytest.skip("postgresql not in AUTHSVC_TEST_BACKENDS")
    name, url = create_postgres_database()
    yield url
    drop_postgres_database(name)


@pytest.fixture(scope="module")
def pair(database, tmp_path_factory):
    """Two instances started at the same moment on one empty database."""
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    env = clean_env(
        SECRET_KEY="instances-test-secret-" + "i" * 40,
        DATABASE_URL=database,
        RATELIMIT_STORAGE_URI=REDIS_URL,
        REGISTRATION_RATE_LIMIT="10000 per minute",
        PROXY_COUNT="1",
        **FAST_HASHING,
    )
    folders = [tmp_path_factory.mktemp(name) for name in ("one", "two")]
    with ThreadPoolExecutor(2) as pool:
        servers = list(
            pool.map(
                lambda folder: LiveServer(serve_command(2), cwd=folder, env=env),
                folders,
            )
        )
    yield servers
    for server in servers:
        server.stop()
        server.assert_clean_output()
    store.flushdb()
    store.close()


def sign_up(server: LiveServer, username: str, address: str) -> dict:
    body = {"username": username, "password": PASSWORD}
    assert server.request("POST", "/users", body).status == 201
    reply = server.request("POST", "/login", body, headers={"X-Forwarded-For": address})
    assert reply.status == 200, reply
    return reply.body


def test_concurrent_first_starts_migrate_once(pair, database):
    engine = create_engine(database)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT * FROM alembic_version")).all()
        keys = connection.execute(text("SELECT kid FROM signing_keys")).all()
    engine.dispose()
    assert len(versions) == 1
    assert len(keys) == 1
    for server in pair:
        server.assert_clean_output()


def test_a_token_from_one_works_on_the_other(pair):
    one, two = pair
    tokens = sign_up(one, "traveller", new_address())
    assert two.request("GET", "/me", token=tokens["access_token"]).status == 200


def test_both_sign_with_the_same_keys(pair):
    one, two = pair
    first = sign_up(one, "keyholder", new_address())
    second = two.request(
        "POST", "/login", {"username": "keyholder", "password": PASSWORD}
    ).body
    kids = {
        jwt.get_unverified_header(t["access_token"])["kid"] for t in (first, second)
    }
    assert len(kids) == 1
    assert (
        one.request("GET", "/.well-known/jwks.json").body
        == two.request("GET", "/.well-known/jwks.json").body
    )


def test_a_logout_on_one_is_refused_on_the_other_at_once(pair):
    one, two = pair
    tokens = sign_up(one, "leaver", new_address())
    assert one.request("POST", "/logout", token=tokens["access_token"]).status == 204
    reply = two.request("GET", "/me", token=tokens["access_token"])
    assert (reply.status, reply.code) == (401, "token_revoked")
    reply = two.request("POST", "/refresh", {"refresh_token": tokens["refresh_token"]})
    assert (reply.status, reply.code) == (401, "invalid_refresh_token")


def test_the_login_throttle_counts_across_both(pair):
    one, two = pair
    sign_up(one, "guarded", new_address())
    address = new_address()
    headers = {"X-Forwarded-For": address}
    wrong = {"username": "guarded", "password": WRONG}
    for server in [one, two] * 5:
        assert server.request("POST", "/login", wrong, headers=headers).status == 401
    for server in pair:
        reply = server.request("POST", "/login", wrong, headers=headers)
        assert (reply.status, reply.code) == (429, "rate_limited")


def test_a_refresh_token_raced_across_both_rotates_once(pair):
    one, two = pair
    tokens = sign_up(one, "racer", new_address())
    body = {"refresh_token": tokens["refresh_token"]}
    barrier = threading.Barrier(10)
    with ThreadPoolExecutor(10) as pool:
        replies = list(
            pool.map(
                lambda server: server.request(
                    "POST", "/refresh", body, barrier=barrier
                ),
                [one, two] * 5,
            )
        )
    # Within the grace window every caller gets the one successor.
    assert Counter(reply.status for reply in replies) == {200: 10}
    assert len({reply.body["refresh_token"] for reply in replies}) == 1
    successor = replies[0].body["refresh_token"]
    assert two.request("POST", "/refresh", {"refresh_token": successor}).status == 200


def test_in_flight_requests_finish_on_sigterm(tmp_path):
    """Graceful shutdown: a login being hashed when SIGTERM arrives still answers."""
    env = clean_env(
        SECRET_KEY="graceful-test-secret-" + "g" * 40,
        DATABASE_URL=f"sqlite:///{tmp_path / 'graceful.db'}",
        # A slow hash keeps the login in flight while the signal arrives.
        ARGON2_TIME_COST="60",
        ARGON2_MEMORY_COST="19456",
    )
    server = LiveServer(serve_command(1), cwd=tmp_path, env=env)
    try:
        body = {"username": "patient", "password": PASSWORD}
        assert server.request("POST", "/users", body).status == 201
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            login = pool.submit(server.request, "POST", "/login", body)
            time.sleep(0.2)
            server.terminate()
            reply = login.result()
        assert reply.status == 200, reply
        assert time.monotonic() - started > 0.2
        server.process.wait(timeout=30)
        assert server.process.returncode == 0
    finally:
        server.stop()
    server.assert_clean_output()
