"""Every 401 of a protected endpoint is a Bearer challenge, whatever its code.

RFC 6750 section 3 and the contract's "Errors" section: a 401 from an endpoint
that takes a bearer token carries ``WWW-Authenticate: Bearer realm="authsvc"``,
with ``error="invalid_token"`` where a token was presented and refused. A 401
whose token was fine (a wrong current password) is a challenge too.
"""

from __future__ import annotations

import pytest
from helpers import PASSWORD, bearer

from authsvc.api import openapi_document

INTROSPECTION_SECRET = "introspection-credential-" + "c" * 24
METRICS_TOKEN = "metrics-credential-" + "m" * 24
CHALLENGE = 'Bearer realm="authsvc"'
REFUSED = 'Bearer realm="authsvc", error="invalid_token"'


@pytest.fixture
def settings(settings: dict) -> dict:
    return {
        **settings,
        "INTROSPECTION_SECRET": INTROSPECTION_SECRET,
        "METRICS_TOKEN": METRICS_TOKEN,
    }


def unauthorized(code: str, detail: str) -> dict:
    return {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": detail,
        "code": code,
    }


def protected_operations(app) -> list[tuple[str, str]]:
    """Every operation the served document says takes a bearer token."""
    document = openapi_document(app)
    return sorted(
        (method.upper(), path.replace("{user_id}", "x").replace("{session_id}", "x"))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method != "parameters" and operation.get("security")
    )


#: A presented token that is refused, and how.
REFUSED_TOKENS = [
    ("not-a-jwt", "invalid_token", "The access token is not valid."),
    ("a.b.c", "invalid_token", "The access token is not valid."),
]


def test_the_document_names_the_protected_operations(app):
    # If this list changes, the tests below cover the new operation by themselves.
    assert protected_operations(app) == [
        ("DELETE", "/admin/users/x"),
        ("DELETE", "/admin/users/x/mfa"),
        ("DELETE", "/admin/users/x/sessions"),
        ("DELETE", "/me"),
        ("DELETE", "/me/mfa"),
        ("DELETE", "/sessions/x"),
        ("GET", "/admin/users"),
        ("GET", "/admin/users/x"),
        ("GET", "/auth/forward"),
        ("GET", "/me"),
        ("GET", "/me/mfa"),
        ("GET", "/sessions"),
        ("HEAD", "/auth/forward"),
        ("PATCH", "/admin/users/x"),
        ("POST", "/introspect"),
        ("POST", "/logout"),
        ("POST", "/me/email"),
        ("POST", "/me/email/confirm"),
        ("POST", "/me/email/verify"),
        ("POST", "/me/mfa/recovery-codes"),
        ("POST", "/me/mfa/totp"),
        ("POST", "/me/mfa/totp/confirm"),
        ("POST", "/me/password"),
        ("POST", "/reauthenticate"),
    ]


def test_every_protected_operation_challenges_a_missing_token(app, client):
    for method, path in [*protected_operations(app), ("GET", "/metrics")]:
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == CHALLENGE, (method, path)
        if method == "HEAD":
            continue  # the same answer, without its body
        assert response.json == unauthorized(
            "authentication_required", "An access token is required."
        )


@pytest.mark.parametrize(("token", "code", "detail"), REFUSED_TOKENS)
def test_every_protected_operation_challenges_a_refused_token(
    app, client, token, code, detail
):
    for method, path in [*protected_operations(app), ("GET", "/metrics")]:
        response = client.open(path, method=method, headers=bearer(token), json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == REFUSED, (method, path)
        if method == "HEAD":
            continue  # the same answer, without its body
        expected = {
            "/introspect": "The introspection credential is not valid.",
            "/metrics": "The metrics credential is not valid.",
        }.get(path, detail)
        assert response.json == unauthorized(code, expected), (method, path)


#: 401s a protected endpoint answers with an accepted token: (method, path, body).
ACCEPTED_TOKEN_401S = [
    pytest.param(
        "POST",
        "/me/password",
        {"current_password": "not my password", "new_password": "a new password!"},
        "The current password is incorrect.",
        id="password-change-wrong-current-password",
    ),
    pytest.param(
        "DELETE",
        "/me",
        {"password": "not my password"},
        "The password is incorrect.",
        id="account-deletion-wrong-password",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "detail"), ACCEPTED_TOKEN_401S)
def test_a_wrong_password_on_a_protected_endpoint_is_a_challenge(
    client, tokens, method, path, body, detail
):
    response = client.open(
        path, method=method, json=body, headers=bearer(tokens["access_token"])
    )
    assert response.json == unauthorized("invalid_credentials", detail)
    # The token was accepted: a bare challenge, no error="invalid_token".
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_a_failed_login_is_not_a_challenge(client, register):
    # /login takes no bearer token: its 401 asks for no Authorization header.
    register()
    response = client.post("/login", json={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    assert "WWW-Authenticate" not in response.headers


def test_the_right_password_still_works(client, tokens):
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "a new password!"},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
