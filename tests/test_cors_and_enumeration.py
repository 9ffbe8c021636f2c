"""CORS for browser apps, and logins that tell nobody which accounts exist."""

from __future__ import annotations

import gc
import json
import re
import statistics
import time
from pathlib import Path

import pytest
from helpers import PASSWORD, bearer, problem
from sqlalchemy import event

from authsvc import admin, users
from authsvc.driver import DriverStatement

ORIGIN = "https://app.example.com"
LOOK_ALIKES = [
    "https://app.example.com.evil.net",
    "http://app.example.com",
    "https://evil.app.example.com",
    "https://app.example.co",
    "https://app-example.com",
    "null",
]
OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
PATH_ID = "00000000-0000-4000-8000-000000000000"
#: Logins per case in the timing test (three cases, interleaved).
TIMING_ROUNDS = 40


def api_routes() -> list[tuple[str, str]]:
    """Every (path, method) of the committed OpenAPI document, ids filled in."""
    paths = json.loads(OPENAPI.read_text())["paths"]
    return [
        (re.sub(r"\{[^}]+\}", PATH_ID, path), method.upper())
        for path, operations in sorted(paths.items())
        for method in sorted(operations)
        if method in HTTP_METHODS
    ]


ROUTES = api_routes()


def preflight(client, path: str, method: str, origin: str = ORIGIN):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def header_list(response, name: str) -> list[str]:
    values = ",".join(response.headers.getlist(name))
    return [item.strip().lower() for item in values.split(",") if item.strip()]


def cors_headers(response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers
        if name.lower().startswith("access-control-")
    }


@pytest.fixture
def cors_app(make_app):
    # Without the refresh cookie: tokens travel in headers only, so no credentials
    # mode (tests/test_refresh_cookie.py covers CORS with the cookie offered).
    return make_app(CORS_ORIGINS=ORIGIN, REFRESH_COOKIE=False)


@pytest.fixture
def cors_client(cors_app):
    return cors_app.test_client()


# --- CORS --------------------------------------------------------------------------


def test_the_routes_come_from_the_openapi_document():
    paths = {path for path, _ in ROUTES}
    assert {"/login", "/me", "/users", "/refresh", "/logout", "/sessions"} <= paths


@pytest.mark.parametrize(("path", "method"), ROUTES)
def test_preflight_from_the_allowed_origin_is_answered(cors_client, path, method):
    response = preflight(cors_client, path, method)
    assert response.status_code in (200, 204), response.data
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert {"authorization", "content-type"} <= set(
        header_list(response, "Access-Control-Allow-Headers")
    )
    assert method.lower() in header_list(response, "Access-Control-Allow-Methods")
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "*" not in response.headers.get("Access-Control-Allow-Origin", "")


@pytest.mark.parametrize(("path", "method"), [("/login", "POST"), ("/me", "GET")])
def test_preflight_answers_vary_by_origin(cors_client, path, method):
    response = preflight(cors_client, path, method)
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert "origin" in header_list(response, "Vary")


@pytest.mark.parametrize("origin", [ORIGIN, LOOK_ALIKES[0]])
def test_simple_answers_vary_by_origin(cors_client, origin):
    response = cors_client.get("/me", headers={"Origin": origin})
    assert response.status_code == 401
    assert "origin" in header_list(response, "Vary")


@pytest.mark.parametrize(("path", "method"), ROUTES)
@pytest.mark.parametrize("origin", LOOK_ALIKES)
def test_preflight_from_a_look_alike_origin_is_not_allowed(
    cors_client, path, method, origin
):
    response = preflight(cors_client, path, method, origin)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_a_simple_request_from_the_allowed_origin_may_read_the_answer(cors_client):
    response = cors_client.post(
        "/users", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 201
    tokens = cors_client.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    ).json
    response = cors_client.get(
        "/me", headers={"Origin": ORIGIN, **bearer(tokens["access_token"])}
    )
    assert response.status_code == 200
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_errors_are_readable_from_the_allowed_origin(cors_client):
    response = cors_client.get("/me", headers={"Origin": ORIGIN})
    problem(response, "authentication_required", 401)
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    exposed = header_list(response, "Access-Control-Expose-Headers")
    assert "www-authenticate" in exposed


def test_retry_after_is_exposed_to_the_allowed_origin(cors_client):
    for _ in range(10):
        cors_client.post("/login", json={"username": "alice", "password": "nope!!"})
    response = cors_client.post(
        "/login",
        json={"username": "alice", "password": "nope!!"},
        headers={"Origin": ORIGIN},
    )
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert "retry-after" in header_list(response, "Access-Control-Expose-Headers")


@pytest.mark.parametrize("origin", LOOK_ALIKES)
def test_a_simple_request_from_a_look_alike_origin_gets_no_cors_header(
    cors_client, origin
):
    response = cors_client.get("/me", headers={"Origin": origin})
    assert response.status_code == 401
    assert "Access-Control-Allow-Origin" not in response.headers


def test_several_origins_are_each_answered_with_their_own(make_app):
    client = make_app(
        CORS_ORIGINS="https://app.example.com, https://admin.example.com"
    ).test_client()
    for origin in ("https://app.example.com", "https://admin.example.com"):
        response = preflight(client, "/login", "POST", origin)
        assert response.headers.getlist("Access-Control-Allow-Origin") == [origin]
        assert "origin" in header_list(response, "Vary")
    response = preflight(client, "/login", "POST", "https://example.com")
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(("path", "method"), ROUTES)
def test_without_configured_origins_there_is_no_cors_header(client, path, method):
    response = preflight(client, path, method)
    assert cors_headers(response) == {}


def test_without_configured_origins_a_simple_request_gets_no_cors_header(client):
    for response in (
        client.get("/me", headers={"Origin": ORIGIN}),
        client.post(
            "/login",
            json={"username": "alice", "password": "nope!!"},
            headers={"Origin": ORIGIN},
        ),
        client.get("/health", headers={"Origin": ORIGIN}),
    ):
        assert cors_headers(response) == {}


# --- enumeration -------------------------------------------------------------------


def comparable(response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and every header but Date and the request's own id, in order."""
    varying = {"date", "x-request-id"}
    headers = [(k, v) for k, v in response.headers if k.lower() not in varying]
    return response.status_code, response.data, headers


def disable(app, username: str) -> None:
    with app.app_context():
        admin.set_active(users.find_user_by_name(username), False)


@pytest.fixture
def known_users(app, register):
    register("alice", email="alice@example.com")
    register("dora", email="dora@example.com")
    disable(app, "dora")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong password!"),
        ("ALICE", "wrong password!"),
        ("alice@example.com", "wrong password!"),
        ("dora", PASSWORD),
        ("dora", "wrong password!"),
        ("dora@example.com", PASSWORD),
        ("nobody@example.com", PASSWORD),
    ],
)
def test_failed_logins_are_indistinguishable(client, known_users, username, password):
    # Each attempt from an address of its own so no counter gets near a limit.
    unknown = client.post(
        "/login",
        json={"username": "nobody", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    )
    other = client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": "192.0.2.2"},
    )
    problem(unknown, "invalid_credentials", 401)
    assert comparable(other) == comparable(unknown)


@pytest.fixture
def statements(app, monkeypatch):
    """The SQL of every statement the app runs, driver and ORM alike, in order."""
    seen: list[str] = []
    database = app.extensions["authsvc.db"]

    def record(method):
        def run(self, *args, **kwargs):
            seen.append(self.sql)
            return method(self, *args, **kwargs)

        return run

    monkeypatch.setattr(DriverStatement, "_execute", record(DriverStatement._execute))
    monkeypatch.setattr(DriverStatement, "run_many", record(DriverStatement.run_many))

    def orm(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", orm)
    yield seen
    event.remove(database.engine, "before_cursor_execute", orm)


@pytest.mark.parametrize(
    "username", ["alice", "ALICE", "alice@example.com", "dora", "nobody@example.com"]
)
def test_failed_logins_run_the_same_statements(
    client, known_users, statements, username
):
    def run(name: str, address: str) -> list[str]:
        statements.clear()
        response = client.post(
            "/login",
            json={"username": name, "password": "wrong password!"},
            environ_base={"REMOTE_ADDR": address},
        )
        problem(response, "invalid_credentials", 401)
        return list(statements)

    unknown = run("nobody", "192.0.2.1")
    assert unknown
    assert run(username, "192.0.2.2") == unknown


def test_a_disabled_account_with_its_password_gets_no_session(client, known_users):
    response = client.post("/login", json={"username": "dora", "password": PASSWORD})
    problem(response, "invalid_credentials", 401)
    assert "access_token" not in response.json


def test_failure_timing_does_not_tell_whether_the_user_exists(app, make_app):
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("timing is measured on SQLite only (production argon2 is slow)")
    production = make_app(
        ARGON2_TIME_COST=2,
        ARGON2_MEMORY_COST=19456,
        LOGIN_RATE_LIMIT="100000 per minute",
    )
    client = production.test_client()
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    response = client.post("/users", json={"username": "dora", "password": PASSWORD})
    assert response.status_code == 201
    disable(production, "dora")
    cases = {
        "unknown": {"username": "nobody", "password": PASSWORD},
        "wrong_password": {"username": "alice", "password": "wrong password!"},
        "disabled": {"username": "dora", "password": PASSWORD},
    }

    def timed(body: dict) -> float:
        started = time.perf_counter()
        response = client.post("/login", json=body)
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        return elapsed

    for body in cases.values():  # warm up: caches, the dummy hash, connections
        timed(body)
    names = list(cases)
    durations: dict[str, list[float]] = {name: [] for name in cases}
    gc.collect()
    gc.disable()
    try:
        for round_ in range(TIMING_ROUNDS):
            # Interleaved, each case first in turn, so load from elsewhere on the
            # machine falls on all of them alike.
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                durations[name].append(timed(cases[name]))
    finally:
        gc.enable()
    medians = {name: statistics.median(times) for name, times in durations.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    assert slowest <= fastest * 1.2, medians
