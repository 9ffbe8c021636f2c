"""Self-service: GET /sessions, DELETE /sessions/{id}, POST /me/password, DELETE /me."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from helpers import (
    BODY_NOT_AN_OBJECT,
    BODY_NOT_JSON,
    PASSWORD,
    assert_refused,
    assert_works,
    bearer,
    me,
    problem,
    refresh,
    unreadable,
)

NEW_PASSWORD = "purple monkey dishwasher 42"
SESSION_TTL = 2592000
SESSION_KEYS = {
    "id",
    "created_at",
    "last_used_at",
    "expires_at",
    "user_agent",
    "ip_address",
    "current",
}


def moment(value: str) -> datetime:
    """Parse an ISO 8601 timestamp of the API; it always carries its zone."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def live_sessions(client, access_token: str) -> list[dict]:
    """GET /sessions as the owner of ``access_token``; return the list."""
    response = client.get("/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.json
    assert response.json.keys() == {"sessions"}
    return response.json["sessions"]


def session_ids(client, access_token: str) -> list[str]:
    return [session["id"] for session in live_sessions(client, access_token)]


def can_log_in(client, username: str, password: str) -> bool:
    response = client.post("/login", json={"username": username, "password": password})
    if response.status_code == 401:
        problem(response, "invalid_credentials", 401)
        return False
    assert response.status_code == 200, response.json
    return True


# --- GET /sessions -------------------------------------------------------------


def test_sessions_shows_the_callers_session(client, register, clock):
    register()
    tokens = client.post(
        "/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "phone/1.0"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    ).json
    response = client.get("/sessions", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    [session] = response.json["sessions"]
    assert session.keys() == SESSION_KEYS
    assert session["id"] == tokens["session_id"]
    assert moment(session["created_at"]) == clock.current
    assert moment(session["last_used_at"]) == clock.current
    assert moment(session["expires_at"]) == clock.current + timedelta(
        seconds=SESSION_TTL
    )
    assert session["user_agent"] == "phone/1.0"
    assert session["ip_address"] == "192.0.2.7"
    assert session["current"] is True


def test_unknown_user_agent_is_null(client, register):
    register()
    tokens = client.post(
        "/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": ""},
    ).json
    [session] = live_sessions(client, tokens["access_token"])
    assert session["user_agent"] is None


def test_sessions_never_show_tokens(client, tokens):
    text = client.get("/sessions", headers=bearer(tokens["access_token"])).get_data(
        as_text=True
    )
    assert tokens["access_token"] not in text
    assert tokens["refresh_token"] not in text
    assert "token" not in text


def test_sessions_newest_first_and_only_the_callers_is_current(
    client, register, login, clock
):
    register()
    first = login()
    clock.advance(60)
    second = login()
    clock.advance(60)
    third = login()
    listed = live_sessions(client, second["access_token"])
    assert [session["id"] for session in listed] == [
        third["session_id"],
        second["session_id"],
        first["session_id"],
    ]
    assert [session["current"] for session in listed] == [False, True, False]
    assert [moment(session["created_at"]) for session in listed] == [
        clock.current,
        clock.current - timedelta(seconds=60),
        clock.current - timedelta(seconds=120),
    ]


def test_last_used_at_follows_refreshes(client, tokens, clock):
    logged_in_at = clock.current
    clock.advance(300)
    refreshed = refresh(client, tokens).json
    [session] = live_sessions(client, refreshed["access_token"])
    assert moment(session["created_at"]) == logged_in_at
    assert moment(session["last_used_at"]) == logged_in_at + timedelta(seconds=300)
    assert moment(session["expires_at"]) == logged_in_at + timedelta(
        seconds=SESSION_TTL
    )


def test_last_used_at_is_each_sessions_own(client, register, login, clock):
    register()
    first = login()
    clock.advance(60)
    second = login()
    clock.advance(60)
    refresh(client, first)
    clock.advance(60)
    listed = live_sessions(client, second["access_token"])
    assert [moment(session["last_used_at"]) for session in listed] == [
        clock.current - timedelta(seconds=120),
        clock.current - timedelta(seconds=60),
    ]


def test_sessions_leave_out_revoked_and_expired_ones(
    client, make_app, register, login, clock
):
    register()
    short_lived = make_app(SESSION_TTL=100).test_client()
    expired = short_lived.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    ).json
    revoked = login()
    client.post("/logout", headers=bearer(revoked["access_token"]))
    mine = login()
    clock.advance(100)
    assert session_ids(client, mine["access_token"]) == [mine["session_id"]]
    assert expired["session_id"] != mine["session_id"]


def test_sessions_leave_out_other_users(client, register, login):
    register("alice")
    register("bob")
    alice = login("alice")
    bob = login("bob")
    assert session_ids(client, alice["access_token"]) == [alice["session_id"]]
    assert session_ids(client, bob["access_token"]) == [bob["session_id"]]


def test_sessions_need_a_token(client):
    response = client.get("/sessions")
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


# --- DELETE /sessions/{id} -----------------------------------------------------


def test_delete_session_revokes_it_at_once(client, register, login):
    register()
    mine = login()
    other = login()
    response = client.delete(
        f"/sessions/{other['session_id']}", headers=bearer(mine["access_token"])
    )
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert_refused(client, other)
    assert_works(client, mine)
    assert session_ids(client, mine["access_token"]) == [mine["session_id"]]


def test_delete_the_calling_session(client, tokens):
    response = client.delete(
        f"/sessions/{tokens['session_id']}", headers=bearer(tokens["access_token"])
    )
    assert response.status_code == 204
    assert_refused(client, tokens)


def test_another_users_session_is_not_found(client, register, login):
    register("alice")
    register("bob")
    alice = login("alice")
    bob = login("bob")
    response = client.delete(
        f"/sessions/{bob['session_id']}", headers=bearer(alice["access_token"])
    )
    problem(response, "not_found", 404, detail="No such session.")
    assert_works(client, bob)
    assert refresh(client, bob).status_code == 200


@pytest.mark.parametrize(
    "session_id",
    [str(uuid.uuid4()), "not-a-uuid", "1", "%00"],
    ids=["unknown-uuid", "not-a-uuid", "number", "nul"],
)
def test_unknown_session_is_not_found(client, tokens, session_id):
    response = client.delete(
        f"/sessions/{session_id}", headers=bearer(tokens["access_token"])
    )
    problem(response, "not_found", 404, detail="No such session.")
    assert_works(client, tokens)


def test_revoked_session_is_not_found(client, register, login):
    register()
    mine = login()
    other = login()
    path = f"/sessions/{other['session_id']}"
    assert client.delete(path, headers=bearer(mine["access_token"])).status_code == 204
    problem(
        client.delete(path, headers=bearer(mine["access_token"])),
        "not_found",
        404,
        detail="No such session.",
    )


def test_logged_out_session_is_not_found(client, register, login):
    register()
    mine = login()
    other = login()
    client.post("/logout", headers=bearer(other["access_token"]))
    response = client.delete(
        f"/sessions/{other['session_id']}", headers=bearer(mine["access_token"])
    )
    problem(response, "not_found", 404, detail="No such session.")


def test_expired_session_is_not_found(client, make_app, register, login, clock):
    register()
    short_lived = make_app(SESSION_TTL=100).test_client()
    expired = short_lived.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    ).json
    mine = login()
    clock.advance(100)
    response = client.delete(
        f"/sessions/{expired['session_id']}", headers=bearer(mine["access_token"])
    )
    problem(response, "not_found", 404, detail="No such session.")


def test_delete_session_needs_a_token(client, tokens):
    response = client.delete(f"/sessions/{tokens['session_id']}")
    problem(response, "authentication_required", 401)
    assert_works(client, tokens)


# --- POST /me/password ---------------------------------------------------------


def change_password(client, tokens: dict, current: str, new: str):
    return client.post(
        "/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(tokens["access_token"]),
    )


def test_change_password_keeps_only_the_calling_session(client, register, login):
    register()
    calling = login()
    others = [login(), login()]
    response = change_password(client, calling, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    for other in others:
        assert_refused(client, other)
    assert_works(client, calling)
    assert session_ids(client, calling["access_token"]) == [calling["session_id"]]
    assert refresh(client, calling).status_code == 200


def test_changed_password_is_the_one_that_logs_in(client, tokens):
    change_password(client, tokens, PASSWORD, NEW_PASSWORD)
    assert can_log_in(client, "alice", NEW_PASSWORD)
    assert not can_log_in(client, "alice", PASSWORD)


def test_wrong_current_password_changes_nothing(client, register, login):
    register()
    calling = login()
    other = login()
    response = change_password(client, calling, "not the password", NEW_PASSWORD)
    problem(
        response,
        "invalid_credentials",
        401,
        detail="The current password is incorrect.",
    )
    assert_works(client, calling)
    assert_works(client, other)
    assert can_log_in(client, "alice", PASSWORD)
    assert not can_log_in(client, "alice", NEW_PASSWORD)


def test_wrong_current_passwords_count_towards_login_throttling(client, tokens):
    for _ in range(10):
        response = change_password(client, tokens, "not the password", NEW_PASSWORD)
        problem(
            response,
            "invalid_credentials",
            401,
            detail="The current password is incorrect.",
        )
    response = client.post(
        "/login", json={"username": "alice", "password": "not the password"}
    )
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        ("Zq8-kk", "must be at least 8 characters"),
        ("", "must be at least 8 characters"),
        ("password123", "is too common"),
        ("my-Alice-secret", "must not contain the username"),
        ("Zq8-" + "k" * 1021, "must be at most 1024 characters"),
    ],
    ids=["short", "empty", "common", "contains-username", "too-long"],
)
def test_new_password_must_meet_the_policy(
    client, register, login, new_password, message
):
    register()
    calling = login()
    other = login()
    response = change_password(client, calling, PASSWORD, new_password)
    body = problem(response, "validation_error", 400, errors={"new_password": message})
    assert body["errors"].keys() == {"new_password"}
    if message is not ...:
        assert body["errors"]["new_password"] == message
    if new_password:
        assert new_password not in response.get_data(as_text=True)
    assert PASSWORD not in response.get_data(as_text=True)
    assert_works(client, other)
    assert can_log_in(client, "alice", PASSWORD)


BAD_PASSWORD_CHANGES = [
    ({}, {"current_password": "is required", "new_password": "is required"}),
    ({"current_password": PASSWORD}, {"new_password": "is required"}),
    ({"new_password": NEW_PASSWORD}, {"current_password": "is required"}),
    (
        {"current_password": 1, "new_password": NEW_PASSWORD},
        {"current_password": "must be a string"},
    ),
    (
        {"current_password": None, "new_password": NEW_PASSWORD},
        {"current_password": "must be a string"},
    ),
    (
        {"current_password": PASSWORD, "new_password": [NEW_PASSWORD]},
        {"new_password": "must be a string"},
    ),
    (
        {"current_password": PASSWORD, "new_password": {"value": NEW_PASSWORD}},
        {"new_password": "must be a string"},
    ),
    (
        {"current_password": "p" * 1025, "new_password": NEW_PASSWORD},
        {"current_password": "must be at most 1024 characters"},
    ),
    (
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "logout_others": False,
        },
        {"logout_others": "is not a known field"},
    ),
]


@pytest.mark.parametrize(("body", "errors"), BAD_PASSWORD_CHANGES)
def test_bad_password_change_body(client, register, login, body, errors):
    register()
    calling = login()
    other = login()
    response = client.post(
        "/me/password", json=body, headers=bearer(calling["access_token"])
    )
    assert problem(response, "validation_error", 400, errors=errors)["errors"] == errors
    assert_works(client, other)
    assert can_log_in(client, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[]", BODY_NOT_AN_OBJECT),
        ('"text"', BODY_NOT_AN_OBJECT),
        ("null", BODY_NOT_AN_OBJECT),
        ("{", BODY_NOT_JSON),
        (f'{{"current_password": "{PASSWORD}"', BODY_NOT_JSON),
    ],
    ids=["array", "string", "null", "broken", "unterminated"],
)
def test_password_change_body_that_is_not_a_json_object(client, tokens, data, message):
    response = client.post(
        "/me/password",
        data=data,
        content_type="application/json",
        headers=bearer(tokens["access_token"]),
    )
    problem(response, "validation_error", 400, **unreadable(message))
    assert PASSWORD not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (
            f"current_password={PASSWORD}&new_password={NEW_PASSWORD}",
            "application/x-www-form-urlencoded",
        ),
        (
            f'{{"current_password": "{PASSWORD}", "new_password": "{NEW_PASSWORD}"}}',
            "text/plain",
        ),
    ],
    ids=["form", "text"],
)
def test_password_change_body_must_be_json(client, tokens, data, content_type):
    response = client.post(
        "/me/password",
        data=data,
        content_type=content_type,
        headers=bearer(tokens["access_token"]),
    )
    problem(response, "unsupported_media_type", 415)
    assert can_log_in(client, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (
            f'{{"current_password": "{PASSWORD}", "new_password": "{NEW_PASSWORD}"}}',
            "application/json",
        ),
        ("{", "application/json"),
        ("[]", "application/json"),
        ("current_password=x", "application/x-www-form-urlencoded"),
        ("", None),
    ],
    ids=["valid", "broken", "array", "form", "empty"],
)
def test_password_change_needs_a_token_before_any_body_check(
    client, register, data, content_type
):
    register()
    response = client.post("/me/password", data=data, content_type=content_type)
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
    assert can_log_in(client, "alice", PASSWORD)


# --- DELETE /me ----------------------------------------------------------------


def delete_me(client, tokens: dict, password: str = PASSWORD):
    return client.delete(
        "/me", json={"password": password}, headers=bearer(tokens["access_token"])
    )


def test_delete_account_ends_every_session(client, register, login):
    register("alice", email="alice@example.com")
    calling = login()
    other = login()
    response = delete_me(client, calling)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    for tokens in (calling, other):
        assert_refused(client, tokens, access_code="invalid_token")
    assert not can_log_in(client, "alice", PASSWORD)
    assert not can_log_in(client, "alice@example.com", PASSWORD)


def test_deleted_names_are_free_and_old_tokens_stay_refused(client, register, login):
    old = register("alice", email="alice@example.com")
    old_tokens = login()
    assert delete_me(client, old_tokens).status_code == 204
    new = register("Alice", password=NEW_PASSWORD, email="ALICE@example.com")
    assert new["id"] != old["id"]
    new_tokens = login("alice", NEW_PASSWORD)
    # The old account's tokens never work for the new account with the same name.
    response = me(client, old_tokens)
    assert response.status_code == 401
    problem(response, "invalid_token", 401)
    problem(refresh(client, old_tokens), "invalid_refresh_token", 401)
    assert me(client, new_tokens).json["id"] == new["id"]
    assert not can_log_in(client, "alice", PASSWORD)


def test_delete_account_with_the_wrong_password(client, register, login):
    created = register()
    calling = login()
    other = login()
    response = delete_me(client, calling, "not the password")
    problem(response, "invalid_credentials", 401, detail="The password is incorrect.")
    assert me(client, calling).json == created
    assert_works(client, other)
    assert can_log_in(client, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"password": "is required"}),
        ({"password": 1}, {"password": "must be a string"}),
        ({"password": None}, {"password": "must be a string"}),
        ({"password": [PASSWORD]}, {"password": "must be a string"}),
        ({"password": "p" * 1025}, {"password": "must be at most 1024 characters"}),
        (
            {"password": PASSWORD, "confirm": True},
            {"confirm": "is not a known field"},
        ),
        (
            {"current_password": PASSWORD},
            {"password": "is required", "current_password": "is not a known field"},
        ),
    ],
    ids=[
        "missing",
        "number",
        "null",
        "list",
        "too-long",
        "unknown-field",
        "wrong-name",
    ],
)
def test_bad_account_deletion_body(client, tokens, body, errors):
    response = client.delete("/me", json=body, headers=bearer(tokens["access_token"]))
    result = problem(response, "validation_error", 400, errors=errors)
    if errors is not ...:
        assert result["errors"] == errors
    assert PASSWORD not in response.get_data(as_text=True)
    assert_works(client, tokens)
    assert can_log_in(client, "alice", PASSWORD)


#: Bodies of DELETE /me that are not a readable JSON object, and what each is told.
NOT_AN_OBJECT_DELETIONS = {
    "[]": BODY_NOT_AN_OBJECT,
    "{": BODY_NOT_JSON,
    f'"{PASSWORD}"': BODY_NOT_AN_OBJECT,
}


@pytest.mark.parametrize("data", ["[]", "{", f'"{PASSWORD}"'])
def test_account_deletion_body_that_is_not_a_json_object(client, tokens, data):
    response = client.delete(
        "/me",
        data=data,
        content_type="application/json",
        headers=bearer(tokens["access_token"]),
    )
    problem(
        response,
        "validation_error",
        400,
        **unreadable(NOT_AN_OBJECT_DELETIONS[data]),
    )
    assert PASSWORD not in response.get_data(as_text=True)
    assert_works(client, tokens)


def test_account_deletion_body_must_be_json(client, tokens):
    response = client.delete(
        "/me",
        data=f"password={PASSWORD}",
        content_type="application/x-www-form-urlencoded",
        headers=bearer(tokens["access_token"]),
    )
    problem(response, "unsupported_media_type", 415)
    assert_works(client, tokens)


def test_account_deletion_without_a_body_deletes_nothing(client, tokens):
    response = client.delete("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code in {400, 415}, response.json
    assert response.mimetype == "application/problem+json"
    assert_works(client, tokens)


def test_account_deletion_needs_a_token(client, tokens):
    response = client.delete("/me", json={"password": PASSWORD})
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'
    assert_works(client, tokens)
