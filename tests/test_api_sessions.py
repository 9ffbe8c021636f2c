"""POST /login, POST /refresh, POST /logout."""

from __future__ import annotations

import pytest
from helpers import PASSWORD, bearer, problem
from sqlalchemy import func, select, update

from authsvc.db import get_session
from authsvc.models import AuthSession, RefreshToken, User

TOKEN_KEYS = {
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
    "session_id",
}


def count(app, model) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(model))


def set_active(app, username: str, active: bool) -> None:
    with app.app_context():
        db = get_session()
        db.execute(
            update(User).where(User.username == username).values(is_active=active)
        )
        db.commit()


# --- POST /login ---------------------------------------------------------------


def test_login_returns_tokens_without_caching_or_cookies(client, register):
    register()
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json
    assert body.keys() == TOKEN_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 604800
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "username",
    ["alice", "ALICE", "ａｌｉｃｅ", "alice@example.com", "Alice@EXAMPLE.com"],
)
def test_login_by_username_or_email_case_insensitively(client, register, username):
    register("Alice", email="alice@example.com")
    response = client.post("/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200


def test_login_with_full_width_password(client, register):
    register("alice", password="Passw0rd-Zebra")
    response = client.post(
        "/login", json={"username": "alice", "password": "Ｐａｓｓｗ０ｒｄ－Ｚｅｂｒａ"}
    )
    assert response.status_code == 200


def test_each_login_opens_a_new_session(app, login, register):
    register()
    first, second = login(), login()
    assert first["session_id"] != second["session_id"]
    assert count(app, AuthSession) == 2


def test_login_records_the_device(app, client, register):
    register()
    client.post(
        "/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "phone/1.0"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    with app.app_context():
        session = get_session().scalar(select(AuthSession))
    assert (session.user_agent, session.ip_address) == ("phone/1.0", "192.0.2.7")


@pytest.mark.parametrize(
    ("username", "password"),
    [("mallory", PASSWORD), ("alice", "wrong password!"), ("disabled", PASSWORD)],
    ids=["unknown-user", "wrong-password", "disabled-account"],
)
def test_failed_logins_look_alike(app, client, register, username, password):
    register("alice")
    register("disabled")
    set_active(app, "disabled", False)
    response = client.post("/login", json={"username": username, "password": password})
    body = problem(response, "invalid_credentials", 401)
    assert body == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "The username or password is incorrect.",
        "code": "invalid_credentials",
    }
    assert count(app, AuthSession) == 0


def test_login_rehashes_when_parameters_change(app, make_app, register):
    register()
    with app.app_context():
        old_hash = get_session().scalar(select(User.password_hash))
    stronger = make_app(ARGON2_TIME_COST=2).test_client()
    response = stronger.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    with app.app_context():
        new_hash = get_session().scalar(select(User.password_hash))
    assert new_hash != old_hash
    assert ",t=2," in new_hash or "t=2," in new_hash


BAD_LOGINS = [
    ({}, {"username": "is required", "password": "is required"}),
    ({"username": "alice"}, {"password": "is required"}),
    ({"password": PASSWORD}, {"username": "is required"}),
    ({"username": 1, "password": PASSWORD}, {"username": "must be a string"}),
    ({"username": "alice", "password": True}, {"password": "must be a string"}),
    ({"username": None, "password": PASSWORD}, {"username": "must be a string"}),
    (
        {"username": "", "password": PASSWORD},
        {"username": "must be at least 1 characters"},
    ),
    (
        {"username": "alice", "password": ""},
        {"password": "must be at least 1 characters"},
    ),
    (
        {"username": "a" * 321, "password": PASSWORD},
        {"username": "must be at most 320 characters"},
    ),
    (
        {"username": "alice", "password": "p" * 1025},
        {"password": "must be at most 1024 characters"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "remember": True},
        {"remember": "is not a known field"},
    ),
]


@pytest.mark.parametrize(("body", "errors"), BAD_LOGINS)
def test_bad_login_body(app, client, body, errors):
    response = client.post("/login", json=body)
    assert problem(response, "validation_error", 400, errors=errors)["errors"] == errors
    assert count(app, AuthSession) == 0


@pytest.mark.parametrize(
    "username", ["x' OR '1'='1", "alice'--", "alice\x00", "%", "_____"]
)
def test_sql_shaped_usernames_just_fail(app, client, register, username):
    register()
    response = client.post("/login", json={"username": username, "password": PASSWORD})
    assert response.status_code in {400, 401}
    assert count(app, AuthSession) == 0


# --- POST /refresh -------------------------------------------------------------


def test_refresh_rotates_and_keeps_the_session(client, tokens):
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    body = response.json
    assert body.keys() == TOKEN_KEYS
    assert body["session_id"] == tokens["session_id"]
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["access_token"] != tokens["access_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert client.get("/me", headers=bearer(body["access_token"])).status_code == 200


def test_refresh_tokens_are_stored_only_as_hashes(app, tokens):
    with app.app_context():
        stored = get_session().scalars(select(RefreshToken.token_hash)).all()
    assert tokens["refresh_token"] not in stored
    assert all(len(value) == 64 for value in stored)


def test_refresh_twice_within_grace_gives_the_same_successor(client, tokens, clock):
    first = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    clock.advance(5)
    second = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert second.status_code == 200
    assert second.json["refresh_token"] == first.json["refresh_token"]
    assert second.json["session_id"] == tokens["session_id"]
    for body in (first.json, second.json):
        assert (
            client.get("/me", headers=bearer(body["access_token"])).status_code == 200
        )


def test_refresh_reuse_after_grace_revokes_the_session(client, tokens, clock):
    rotated = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    clock.advance(11)
    replay = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(replay, "invalid_refresh_token", 401)
    newest = client.post(
        "/refresh", json={"refresh_token": rotated.json["refresh_token"]}
    )
    problem(newest, "invalid_refresh_token", 401)
    for access in (tokens["access_token"], rotated.json["access_token"]):
        problem(client.get("/me", headers=bearer(access)), "token_revoked", 401)


def test_with_zero_grace_any_reuse_revokes(make_app, tokens):
    client = make_app(REFRESH_REUSE_GRACE=0).test_client()
    rotated = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    replay = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(replay, "invalid_refresh_token", 401)
    newest = client.post(
        "/refresh", json={"refresh_token": rotated.json["refresh_token"]}
    )
    problem(newest, "invalid_refresh_token", 401)


def test_refresh_token_idle_expiry(client, tokens, clock):
    clock.advance(604800)
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(response, "invalid_refresh_token", 401)


def test_rotation_extends_idle_life_but_never_the_session(make_app, register, clock):
    client = make_app(REFRESH_TOKEN_TTL=100, SESSION_TTL=250).test_client()
    register()
    body = client.post("/login", json={"username": "alice", "password": PASSWORD}).json
    for _ in range(2):
        clock.advance(90)
        body = client.post(
            "/refresh", json={"refresh_token": body["refresh_token"]}
        ).json
        assert "refresh_token" in body
    assert body["refresh_expires_in"] == 70
    assert body["expires_in"] == 70
    clock.advance(70)
    response = client.post("/refresh", json={"refresh_token": body["refresh_token"]})
    problem(response, "invalid_refresh_token", 401)
    # The access token's exp was capped at the end of the session.
    problem(
        client.get("/me", headers=bearer(body["access_token"])), "token_expired", 401
    )


def test_refresh_of_disabled_user(app, client, tokens):
    set_active(app, "alice", False)
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(response, "invalid_refresh_token", 401)


@pytest.mark.parametrize(
    "token",
    ["unknown-token", "x" * 43, "eyJhbGciOiJIUzI1NiJ9.e30.sig"],
    ids=["unknown", "random", "jwt-shaped"],
)
def test_refresh_with_an_unknown_token(client, tokens, token):
    response = client.post("/refresh", json={"refresh_token": token})
    problem(response, "invalid_refresh_token", 401)


def test_access_token_is_not_a_refresh_token(client, tokens):
    response = client.post("/refresh", json={"refresh_token": tokens["access_token"]})
    problem(response, "invalid_refresh_token", 401)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"refresh_token": "is required"}),
        ({"refresh_token": 5}, {"refresh_token": "must be a string"}),
        ({"refresh_token": ""}, {"refresh_token": "must be at least 1 characters"}),
        (
            {"refresh_token": "r" * 4097},
            {"refresh_token": "must be at most 4096 characters"},
        ),
    ],
)
def test_bad_refresh_body(client, body, errors):
    response = client.post("/refresh", json=body)
    assert problem(response, "validation_error", 400, errors=errors)["errors"] == errors


# --- POST /logout --------------------------------------------------------------


def test_logout_revokes_the_access_and_refresh_tokens(client, tokens):
    response = client.post("/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    me = client.get("/me", headers=bearer(tokens["access_token"]))
    problem(me, "token_revoked", 401)
    assert (
        me.headers["WWW-Authenticate"]
        == 'Bearer realm="authsvc", error="invalid_token"'
    )
    again = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(again, "invalid_refresh_token", 401)


def test_logout_keeps_other_sessions(client, tokens, login):
    other = login()
    client.post("/logout", headers=bearer(tokens["access_token"]))
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_all_ends_every_session(client, tokens, login):
    other = login()
    response = client.post(
        "/logout", json={"all": True}, headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 204
    for session in (tokens, other):
        problem(
            client.get("/me", headers=bearer(session["access_token"])),
            "token_revoked",
            401,
        )


def test_logout_all_false_is_a_plain_logout(client, tokens, login):
    other = login()
    client.post("/logout", json={"all": False}, headers=bearer(tokens["access_token"]))
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_needs_a_token(client):
    problem(client.post("/logout"), "authentication_required", 401)


def test_anonymous_bad_body_is_401_not_400(client):
    response = client.post("/logout", data="{", content_type="application/json")
    problem(response, "authentication_required", 401)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"all": "yes"}, {"all": "must be true or false"}),
        ({"everything": True}, {"everything": "is not a known field"}),
    ],
)
def test_bad_logout_body(client, tokens, body, errors):
    response = client.post("/logout", json=body, headers=bearer(tokens["access_token"]))
    assert problem(response, "validation_error", 400, errors=errors)["errors"] == errors
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
