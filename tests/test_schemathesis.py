"""Property-based API tests: Schemathesis against every operation of the document.

``test_every_operation`` lets Schemathesis generate requests (its examples,
coverage and fuzzing phases, valid and invalid data) for each operation of the
committed ``openapi/openapi.json`` (``test_openapi.py`` proves it is the served
one) and checks every answer: no 5xx, a documented status code, a documented
content type and a body that matches the documented model. Every request
carries a fresh access token of a user with the role ``admin``, so protected and
``/admin`` operations get past authentication; Schemathesis itself also sends
requests without one.

Random data rarely reaches the happy paths (a registration that passes the
password policy, a known refresh token, an existing user's id), so
``test_*_paths`` send those requests explicitly and let Schemathesis validate
the answers with the same checks.

It runs on SQLite and on PostgreSQL like every other ``app`` test: the two
differ exactly where fuzzing is useful (PostgreSQL enforces column lengths and
refuses NUL characters in text, see F4 and F5), and both together take about
half a minute. Generation is derandomized, so every run sends the same requests.

Two defects it found are pinned below: NUL in a search and names whose
case-folded key outgrows its column (both were 500s on PostgreSQL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from helpers import PASSWORD, bearer
from hypothesis import HealthCheck

from authsvc import admin, registration, users
from authsvc.errors import Problem

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
DOCUMENT = json.loads(COMMITTED.read_text())

#: Generated cases per operation in the fuzzing phase (the coverage phase adds
#: its own deterministic boundary cases on top).
MAX_EXAMPLES = 50
ADMIN = "schemathesis-admin"
NEW_PASSWORD = "another correct horse battery"
PROBLEM_JSON = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
INTROSPECTION_SECRET = "introspection-secret-" + "i" * 32


schema = schemathesis.openapi.from_dict(DOCUMENT)


def content_type_conformance(ctx, response, case) -> bool | None:
    """Schemathesis' check, minus bodiless 204s.

    Swagger 2.0 cannot say that a 204 has no body: `produces` covers every
    response of an operation, so the stock check wants a Content-Type even on
    a 204, which rightly has none. Not a defect of the service or the document.
    """
    if response.status_code == 204 and not response.content:
        return None
    return schemathesis.checks.content_type_conformance(ctx, response, case)


def problem_json_errors(ctx, response, case) -> bool | None:
    """The contract: every error is problem+json, every other body plain JSON.

    The one exception is the documented 503 of /health, a Health body.
    """
    if not response.content:
        return None
    status = response.status_code
    content_type = (response.headers.get("content-type") or [""])[0]
    is_problem = status >= 400 and (case.operation.path, status) != ("/health", 503)
    expected = PROBLEM_JSON if is_problem else "application/json"
    assert content_type.split(";")[0].strip() == expected, (
        f"{response.status_code} with Content-Type {content_type!r}, "
        f"expected {expected}"
    )
    return None


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    problem_json_errors,
]


@pytest.fixture
def settings(settings: dict) -> dict:
    return {
        **settings,
        # Random logins and password changes fail; past the login limit even the
        # admin's own login would be refused. Throttling is tested on its own.
        "LOGIN_RATE_LIMIT": "1000000 per minute",
        # Without it /introspect is a 404 whatever is sent.
        "INTROSPECTION_SECRET": INTROSPECTION_SECRET,
    }


def admin_token(app) -> str:
    """A new session's access token for the admin, re-creating them if need be.

    Examples may log the admin out everywhere, disable them, drop their role or
    delete them; every example starts from a working admin again.
    """
    return admin_login(app)["access_token"]


def admin_login(app) -> dict:
    with app.app_context():
        try:
            user = users.find_user_by_name(ADMIN)
        except Problem:
            user = registration.create_user(ADMIN, PASSWORD, roles=["admin"])
        if not user.is_active or user.roles != ["admin"]:
            admin.update_user(user, is_active=True, roles=["admin"])
    return login(app, ADMIN)


def login(app, username: str, password: str = PASSWORD, **headers: str) -> dict:
    response = app.test_client().post(
        "/login", json={"username": username, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.json
    return response.json


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # One app (and database) serves all examples of an operation on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation(case, app):
    if case.operation.path == "/introspect":
        credential = INTROSPECTION_SECRET
    else:
        credential = admin_token(app)
    case.call_and_validate(app=app, headers=bearer(credential), checks=CHECKS)


# --- happy paths: requests random data does not find --------------------------


def call(
    app,
    method: str,
    path: str,
    status: int,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    **case: Any,
) -> Any:
    """Send one request built by Schemathesis, check it like the fuzzer does."""
    operation = schema[path][method]
    sent_headers = {**(bearer(token) if token else {}), **(headers or {})}
    response = operation.Case(**case).call_and_validate(
        app=app, headers=sent_headers, checks=CHECKS
    )
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def test_registration_and_token_paths(app):
    carol = call(
        app,
        "POST",
        "/users",
        201,
        body={"username": "carol", "password": PASSWORD, "email": "c@example.com"},
    )
    call(app, "POST", "/users", 201, body={"username": "dave", "password": PASSWORD})
    call(app, "POST", "/users", 409, body={"username": "Carol", "password": PASSWORD})
    tokens = call(
        app, "POST", "/login", 200, body={"username": "carol", "password": PASSWORD}
    )
    tokens = call(
        app, "POST", "/refresh", 200, body={"refresh_token": tokens["refresh_token"]}
    )
    assert call(app, "GET", "/me", 200, token=tokens["access_token"]) == carol
    dave = login(app, "dave")["access_token"]
    # Registered without an e-mail: `email` is null (F2).
    assert call(app, "GET", "/me", 200, token=dave)["email"] is None
    call(app, "GET", "/health", 200)


def test_self_service_paths(app):
    call(app, "POST", "/users", 201, body={"username": "erin", "password": PASSWORD})
    # A client that sends no User-Agent: the session's user_agent is null (F3).
    other = login(app, "erin", **{"User-Agent": ""})
    token = login(app, "erin")["access_token"]
    sessions = call(app, "GET", "/sessions", 200, token=token)["sessions"]
    assert None in {session["user_agent"] for session in sessions}
    call(
        app,
        "DELETE",
        "/sessions/{session_id}",
        204,
        token=token,
        path_parameters={"session_id": other["session_id"]},
    )
    call(
        app,
        "POST",
        "/me/password",
        204,
        token=token,
        body={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    # The body of /logout is optional, though documented as required (F6).
    call(app, "POST", "/logout", 204, token=token)
    token = login(app, "erin", NEW_PASSWORD)["access_token"]
    call(app, "POST", "/logout", 204, token=token, body={"all": True})
    token = login(app, "erin", NEW_PASSWORD)["access_token"]
    call(app, "DELETE", "/me", 204, token=token, body={"password": NEW_PASSWORD})
    call(app, "GET", "/me", 401, token=token)


def test_admin_paths(app):
    admin = admin_token(app)
    frank = call(
        app, "POST", "/users", 201, body={"username": "frank", "password": PASSWORD}
    )
    frank_token = login(app, "frank")["access_token"]
    call(app, "GET", "/admin/users", 403, token=frank_token)
    page = call(
        app,
        "GET",
        "/admin/users",
        200,
        token=admin,
        query={"q": "FRA", "page": "1", "per_page": "10"},
    )
    assert [user["id"] for user in page["users"]] == [frank["id"]]
    one = {"user_id": frank["id"]}
    call(app, "GET", "/admin/users/{user_id}", 200, token=admin, path_parameters=one)
    changed = call(
        app,
        "PATCH",
        "/admin/users/{user_id}",
        200,
        token=admin,
        path_parameters=one,
        body={"is_active": False, "roles": ["auditor"]},
    )
    assert (changed["is_active"], changed["roles"]) == (False, ["auditor"])
    call(
        app,
        "DELETE",
        "/admin/users/{user_id}/sessions",
        204,
        token=admin,
        path_parameters=one,
    )
    call(app, "DELETE", "/admin/users/{user_id}", 204, token=admin, path_parameters=one)
    call(app, "GET", "/admin/users/{user_id}", 404, token=admin, path_parameters=one)


def test_token_service_paths(app):
    assert call(app, "GET", "/.well-known/jwks.json", 200)["keys"]
    tokens = admin_login(app)
    access = {"token": tokens["access_token"]}
    for media_type in ("application/json", FORM):
        claims = call(
            app,
            "POST",
            "/introspect",
            200,
            token=INTROSPECTION_SECRET,
            body=access,
            media_type=media_type,
        )
        assert claims["active"] is True
        assert claims["username"] == ADMIN
    call(
        app,
        "POST",
        "/revoke",
        200,
        body={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        media_type=FORM,
    )
    inactive = call(
        app, "POST", "/introspect", 200, token=INTROSPECTION_SECRET, body=access
    )
    assert inactive == {"active": False}
    call(app, "POST", "/revoke", 200, body=access)


# --- defects found by fuzzing, pinned ---------------------------------------


def test_admin_search_for_a_nul_character(app):
    # PostgreSQL refuses NUL in text parameters: it is refused before the query.
    call(app, "GET", "/admin/users", 400, token=admin_token(app), query={"q": "\0"})


@pytest.mark.parametrize(
    "body",
    [
        # "ß" is one character but case-folds to "ss": the 64-character username
        # has a 128-character key, longer than the key column.
        {"username": "ß" * 64, "password": PASSWORD},
        {"username": "ivan", "password": PASSWORD, "email": "ß" * 200 + "@a.io"},
    ],
    ids=["username", "email"],
)
def test_registration_whose_key_outgrows_its_column(app, body):
    call(app, "POST", "/users", 400, body=body)
