"""POST /users (registration) and GET /me."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from helpers import PASSWORD, bearer, problem
from sqlalchemy import func, select

from authsvc.db import get_session
from authsvc.models import User

USER_KEYS = {"id", "username", "email", "roles", "created_at"}


def user_count(app) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(User))


def test_register_returns_the_user(client):
    response = client.post(
        "/users",
        json={"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
    )
    assert response.status_code == 201
    body = response.json
    assert body.keys() == USER_KEYS
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["roles"] == []
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_email_is_optional(register):
    assert register("bob")["email"] is None


def test_password_is_stored_only_as_argon2id_hash(app, register):
    register()
    with app.app_context():
        user = get_session().scalar(select(User))
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    "taken",
    ["alice", "Alice", "ALICE", "ａｌｉｃｅ", "Ａｌｉｃｅ"],
    ids=["same", "capitalised", "upper", "full-width", "full-width-capital"],
)
def test_username_taken_case_insensitively(client, register, taken):
    register("alice")
    response = client.post("/users", json={"username": taken, "password": PASSWORD})
    problem(response, "already_exists", 409)


@pytest.mark.parametrize("taken", ["alice@example.com", "ALICE@Example.COM"])
def test_email_taken_case_insensitively(client, register, taken):
    register("alice", email="alice@example.com")
    response = client.post(
        "/users", json={"username": "bob", "password": PASSWORD, "email": taken}
    )
    problem(response, "already_exists", 409)


def test_full_width_username_is_stored_normalised(register):
    assert register("ｂｏｂ")["username"] == "bob"


BAD_REGISTRATIONS = [
    ({"password": PASSWORD}, {"username": "is required"}),
    ({"username": "alice"}, {"password": "is required"}),
    ({"username": 5, "password": PASSWORD}, {"username": "must be a string"}),
    ({"username": "alice", "password": None}, {"password": "must be a string"}),
    ({"username": ["alice"], "password": PASSWORD}, {"username": "must be a string"}),
    (
        {"username": "alice", "password": PASSWORD, "email": 7},
        {"email": "must be a string"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "admin": True},
        {"admin": "is not a known field"},
    ),
    ({"username": "", "password": PASSWORD}, {"username": ...}),
    ({"username": "al", "password": PASSWORD}, {"username": ...}),
    ({"username": "a" * 65, "password": PASSWORD}, {"username": ...}),
    ({"username": "al ice", "password": PASSWORD}, {"username": ...}),
    ({"username": "alice@x", "password": PASSWORD}, {"username": ...}),
    ({"username": "x' OR '1'='1", "password": PASSWORD}, {"username": ...}),
    ({"username": "alice;--", "password": PASSWORD}, {"username": ...}),
    ({"username": "alice", "password": "short"}, {"password": ...}),
    ({"username": "alice", "password": ""}, {"password": ...}),
    ({"username": "alice", "password": "p" * 1025}, {"password": ...}),
    ({"username": "alice", "password": "password123"}, {"password": "is too common"}),
    (
        {"username": "alice", "password": "my-Alice-secret"},
        {"password": "must not contain the username"},
    ),
    ({"username": "alice", "password": PASSWORD, "email": "no"}, {"email": ...}),
    ({"username": "alice", "password": PASSWORD, "email": "a@b"}, {"email": ...}),
    ({"username": "alice", "password": PASSWORD, "email": "a b@c.de"}, {"email": ...}),
    ({"username": "alice", "password": PASSWORD, "email": ""}, {"email": ...}),
]


@pytest.mark.parametrize(("body", "errors"), BAD_REGISTRATIONS)
def test_bad_registration_is_400_and_writes_nothing(app, client, body, errors):
    response = client.post("/users", json=body)
    result = problem(response, "validation_error", 400)
    assert result["errors"].keys() == errors.keys()
    for field, message in errors.items():
        if message is not ...:
            assert result["errors"][field] == message
    assert user_count(app) == 0


def test_validation_messages_never_repeat_the_password(client):
    secret = "Sup3r-Secret-Value-" + "z" * 1100
    response = client.post("/users", json={"username": "a", "password": secret})
    assert response.status_code == 400
    assert "Sup3r" not in response.get_data(as_text=True)


@pytest.mark.parametrize("min_length", [12, 20])
def test_password_min_length_is_configurable(make_app, min_length):
    client = make_app(PASSWORD_MIN_LENGTH=min_length).test_client()
    too_short = "Zq8-" + "k" * (min_length - 5)
    response = client.post("/users", json={"username": "bob", "password": too_short})
    body = problem(response, "validation_error", 400)
    assert body["errors"] == {"password": f"must be at least {min_length} characters"}


def test_registration_closed(app, make_app):
    client = make_app(REGISTRATION="closed").test_client()
    response = client.post("/users", json={"username": "bob", "password": PASSWORD})
    problem(response, "registration_closed", 403)
    assert user_count(app) == 0


def test_me_returns_the_caller(client, register, login):
    created = register("alice", email="alice@example.com")
    tokens = login("ALICE")
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json == created
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_me_never_shows_secrets(client, tokens):
    text = client.get("/me", headers=bearer(tokens["access_token"])).get_data(True)
    assert "argon2" not in text
    assert PASSWORD not in text
    assert "password" not in text


def test_me_without_a_token(client):
    response = client.get("/me")
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
