"""GET and HEAD /auth/forward: a reverse proxy asks whether a request may pass."""

from __future__ import annotations

import pytest
from helpers import PASSWORD, bearer, problem

FORWARD = "/auth/forward"
CHALLENGE = 'Bearer realm="authsvc"'
INVALID = 'Bearer realm="authsvc", error="invalid_token"'
SCOPE = 'Bearer realm="authsvc", error="insufficient_scope"'
IDENTITY = {
    "X-Auth-Request-User",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Session",
}


def create_user(runner, username: str, *roles: str, email: str | None = None) -> None:
    """Create a user through the CLI, with roles."""
    args = ["users", "create", username, "--password-stdin"]
    for role in roles:
        args += ["--role", role]
    if email is not None:
        args += ["--email", email]
    result = runner.invoke(args=args, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def identity(response) -> dict[str, str]:
    """The X-Auth-Request-* headers, as the bytes on the wire read as UTF-8."""
    return {
        name: value.encode("latin-1").decode("utf-8")
        for name, value in response.headers
        if name.startswith("X-Auth-Request-")
    }


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_valid_token_passes_and_names_the_caller(client, runner, login, method):
    create_user(runner, "alice", "editor", "viewer", email="alice@example.com")
    tokens = login()
    me = client.get("/me", headers=bearer(tokens["access_token"])).json
    response = client.open(
        FORWARD, method=method, headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert identity(response) == {
        "X-Auth-Request-User": me["id"],
        "X-Auth-Request-Preferred-Username": "alice",
        "X-Auth-Request-Email": "alice@example.com",
        "X-Auth-Request-Groups": "editor,viewer",
        "X-Auth-Request-Session": tokens["session_id"],
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_no_email_and_no_roles(client, register, login):
    register("bob")
    tokens = login("bob")
    response = client.get(FORWARD, headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert identity(response) == {
        "X-Auth-Request-User": identity(response)["X-Auth-Request-User"],
        "X-Auth-Request-Preferred-Username": "bob",
        "X-Auth-Request-Groups": "",
        "X-Auth-Request-Session": tokens["session_id"],
    }


def test_a_name_beyond_latin_1_goes_as_utf_8(client, register, login):
    register("tanaka田中", email="田中@example.jp")
    response = client.get(FORWARD, headers=bearer(login("tanaka田中")["access_token"]))
    assert response.status_code == 204
    assert identity(response)["X-Auth-Request-Preferred-Username"] == "tanaka田中"
    assert identity(response)["X-Auth-Request-Email"] == "田中@example.jp"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_no_token_is_401(client, method):
    response = client.open(FORWARD, method=method)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert not IDENTITY & set(response.headers.keys())
    if method == "GET":
        problem(response, "authentication_required", 401)


@pytest.mark.parametrize(
    ("authorization", "code", "status", "challenge"),
    [
        ("Bearer not-a-token", "invalid_token", 401, INVALID),
        ("Bearer a.b.c", "invalid_token", 401, INVALID),
        (
            "Bearer",
            "invalid_request",
            400,
            'Bearer realm="authsvc", error="invalid_request"',
        ),
        ("Basic YWxpY2U6c2VjcmV0", "authentication_required", 401, CHALLENGE),
    ],
)
def test_a_bad_token_is_refused_as_for_me(
    client, authorization, code, status, challenge
):
    headers = {"Authorization": authorization}
    response = client.get(FORWARD, headers=headers)
    problem(response, code, status)
    assert response.headers["WWW-Authenticate"] == challenge
    me = client.get("/me", headers=headers)
    assert (me.status_code, me.json) == (response.status_code, response.json)


def test_a_refresh_token_is_not_an_access_token(client, tokens):
    response = client.get(FORWARD, headers=bearer(tokens["refresh_token"]))
    problem(response, "invalid_token", 401)


def test_a_logout_takes_effect_at_once(client, tokens):
    headers = bearer(tokens["access_token"])
    assert client.get(FORWARD, headers=headers).status_code == 204
    assert client.post("/logout", headers=headers).status_code == 204
    response = client.get(FORWARD, headers=headers)
    problem(response, "token_revoked", 401)
    assert response.headers["WWW-Authenticate"] == INVALID


def test_an_expired_token_is_refused(client, tokens, clock):
    clock.advance(901)
    response = client.get(FORWARD, headers=bearer(tokens["access_token"]))
    problem(response, "token_expired", 401)


def test_a_disabled_user_is_refused_at_once(client, runner, tokens):
    assert runner.invoke(args=["users", "disable", "alice"]).exit_code == 0
    problem(
        client.get(FORWARD, headers=bearer(tokens["access_token"])),
        "invalid_token",
        401,
    )


@pytest.mark.parametrize(
    ("query", "passes"),
    [
        ("?role=editor", True),
        ("?role=admin&role=editor", True),
        ("?role=viewer&role=editor", True),
        ("?role=admin", False),
        ("?role=admin&role=ops", False),
        ("?role=", False),
        ("?role=Editor", False),
        ("?role=editor,viewer", False),
        ("?other=1", True),
    ],
)
def test_role_requirements(client, runner, login, query, passes):
    create_user(runner, "carol", "editor")
    token = login("carol")["access_token"]
    response = client.get(FORWARD + query, headers=bearer(token))
    if passes:
        assert response.status_code == 204
        assert identity(response)["X-Auth-Request-Groups"] == "editor"
    else:
        problem(response, "insufficient_scope", 403)
        assert response.headers["WWW-Authenticate"] == SCOPE
        assert not IDENTITY & set(response.headers.keys())


def test_roles_are_read_now_not_from_the_token(client, runner, login):
    create_user(runner, "dave", "editor")
    create_user(runner, "root", "admin")
    token = login("dave")["access_token"]
    assert client.get(FORWARD + "?role=ops", headers=bearer(token)).status_code == 403
    assert runner.invoke(args=["users", "grant", "dave", "ops"]).exit_code == 0
    # Granting a role revokes the user's sessions: a new login sees it.
    token = login("dave")["access_token"]
    response = client.get(FORWARD + "?role=ops", headers=bearer(token))
    assert response.status_code == 204
    assert identity(response)["X-Auth-Request-Groups"] == "editor,ops"


def test_never_throttled(make_app, register, login):
    client = make_app(LOGIN_RATE_LIMIT="1 per minute").test_client()
    register()
    token = login()["access_token"]
    for _ in range(15):
        problem(client.get(FORWARD, headers=bearer("x.y.z")), "invalid_token", 401)
        assert client.get(FORWARD, headers=bearer(token)).status_code == 204


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(client, method):
    response = client.open(FORWARD, method=method)
    problem(response, "method_not_allowed", 405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
