"""Administration: /admin/users and /admin/users/{id}[/sessions], role ``admin``."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt
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

ADMIN_USER_KEYS = {
    "id",
    "username",
    "email",
    "email_verified",
    "roles",
    "mfa_enabled",
    "created_at",
    "is_active",
    "password_changed_at",
}
INSUFFICIENT_SCOPE = 'Bearer realm="authsvc", error="insufficient_scope"'

#: Every admin operation; ``{id}`` is a user's id.
ADMIN_ROUTES = [
    ("GET", "/admin/users"),
    ("GET", "/admin/users/{id}"),
    ("PATCH", "/admin/users/{id}"),
    ("DELETE", "/admin/users/{id}"),
    ("DELETE", "/admin/users/{id}/sessions"),
]
#: What a PATCH tries to do when the caller is not allowed to.
ESCALATION = {"roles": ["admin"], "is_active": False}


def create_user(runner, username: str, *roles: str, email: str | None = None) -> None:
    """Create a user through the CLI, with roles."""
    args = ["users", "create", username, "--password-stdin"]
    for role in roles:
        args += ["--role", role]
    if email is not None:
        args += ["--email", email]
    result = runner.invoke(args=args, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


@pytest.fixture
def admin_token(runner, login) -> str:
    """An access token of ``root``, who has the role ``admin``."""
    create_user(runner, "root", "admin")
    return login("root")["access_token"]


@pytest.fixture
def admin(client, admin_token):
    """Call an admin endpoint as ``root``."""

    def call(method: str, path: str, **kwargs):
        return client.open(path, method=method, headers=bearer(admin_token), **kwargs)

    return call


def moment(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def can_log_in(client, username: str, password: str = PASSWORD) -> bool:
    response = client.post("/login", json={"username": username, "password": password})
    if response.status_code == 401:
        problem(response, "invalid_credentials", 401)
        return False
    assert response.status_code == 200, response.json
    return True


def usernames(response) -> list[str]:
    assert response.status_code == 200, response.json
    return [user["username"] for user in response.json["users"]]


# --- Who may call ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_non_admin_gets_insufficient_scope(client, register, login, method, path):
    register("alice")
    target = register("bob")
    alice = login("alice")
    bob = login("bob")
    response = client.open(
        path.format(id=target["id"]),
        method=method,
        json=ESCALATION if method == "PATCH" else None,
        headers=bearer(alice["access_token"]),
    )
    problem(response, "insufficient_scope", 403)
    assert response.headers["WWW-Authenticate"] == INSUFFICIENT_SCOPE
    assert "users" not in response.json
    assert me(client, bob).json == target
    assert refresh(client, bob).status_code == 200


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_other_roles_are_not_admin(client, runner, login, method, path):
    create_user(runner, "helper", "support", "Admin", "admins")
    helper = login("helper")
    response = client.open(
        path.format(id=uuid.uuid4()),
        method=method,
        json={} if method == "PATCH" else None,
        headers=bearer(helper["access_token"]),
    )
    problem(response, "insufficient_scope", 403)
    assert response.headers["WWW-Authenticate"] == INSUFFICIENT_SCOPE


def test_non_admin_cannot_grant_themselves_admin(client, register, login):
    alice = register("alice")
    tokens = login("alice")
    response = client.patch(
        f"/admin/users/{alice['id']}",
        json={"roles": ["admin"]},
        headers=bearer(tokens["access_token"]),
    )
    problem(response, "insufficient_scope", 403)
    assert me(client, tokens).json["roles"] == []
    fresh = login("alice")
    assert (
        jwt.decode(fresh["access_token"], options={"verify_signature": False})["roles"]
        == []
    )


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_need_a_token(client, method, path):
    response = client.open(path.format(id=uuid.uuid4()), method=method, json={})
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_refuse_a_bad_token(client, method, path):
    response = client.open(
        path.format(id=uuid.uuid4()),
        method=method,
        json={},
        headers=bearer("not.a.token"),
    )
    problem(response, "invalid_token", 401)
    assert (
        response.headers["WWW-Authenticate"]
        == 'Bearer realm="authsvc", error="invalid_token"'
    )


def test_admin_token_of_an_ended_session_is_refused(client, admin_token):
    client.post("/logout", headers=bearer(admin_token))
    response = client.get("/admin/users", headers=bearer(admin_token))
    problem(response, "token_revoked", 401)


# --- GET /admin/users/{id} -------------------------------------------------------


def test_admin_sees_a_user(admin, register, clock):
    created = register("alice", email="alice@example.com")
    response = admin("GET", f"/admin/users/{created['id']}")
    assert response.status_code == 200
    body = response.json
    assert body.keys() == ADMIN_USER_KEYS
    assert {key: body[key] for key in created} == created
    assert body["is_active"] is True
    assert moment(body["password_changed_at"]) == clock.current


def test_admin_view_never_shows_a_hash(admin, register):
    created = register("alice", email="alice@example.com")
    for path in ("/admin/users", f"/admin/users/{created['id']}"):
        text = admin("GET", path).get_data(as_text=True)
        assert "argon2" not in text
        assert "hash" not in text
        assert PASSWORD not in text


def test_password_changed_at_follows_a_password_change(
    client, admin, register, login, clock
):
    created = register("alice")
    tokens = login("alice")
    clock.advance(60)
    client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "purple monkey 42!"},
        headers=bearer(tokens["access_token"]),
    )
    body = admin("GET", f"/admin/users/{created['id']}").json
    assert moment(body["password_changed_at"]) == clock.current
    assert moment(body["created_at"]) == clock.current - timedelta(seconds=60)


@pytest.mark.parametrize(
    "user_id",
    [str(uuid.uuid4()), "not-a-uuid", "1", "%00"],
    ids=["unknown-uuid", "not-a-uuid", "number", "nul"],
)
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES[1:])
def test_unknown_user_is_not_found(admin, method, path, user_id):
    response = admin(
        method,
        path.format(id=user_id),
        json={"is_active": False} if method == "PATCH" else None,
    )
    problem(response, "not_found", 404, detail="No such user.")


# --- GET /admin/users ------------------------------------------------------------


def test_list_users_shape(admin, register):
    created = register("alice", email="alice@example.com")
    response = admin("GET", "/admin/users?q=alice")
    assert response.status_code == 200
    assert response.json.keys() == {"users", "total"}
    assert response.json["total"] == 1
    [user] = response.json["users"]
    assert user == admin("GET", f"/admin/users/{created['id']}").json


def test_list_users_without_a_query_lists_everyone(admin, register):
    for name in ("carol", "alice", "bob"):
        register(name)
    response = admin("GET", "/admin/users")
    assert usernames(response) == ["alice", "bob", "carol", "root"]
    assert response.json["total"] == 4


@pytest.fixture
def directory(register) -> None:
    """Users to search; ``root`` (no e-mail) is there too."""
    register("alice", email="alice@example.com")
    register("Bob", email="Bob.Smith@Example.ORG")
    register("carol_x")
    register("carolax", email="100%sure@example.net")
    register("dan", email="10sales@example.net")
    register("erin", email="x/y@example.com")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("ALI", {"alice"}),
        ("ａｌｉ", {"alice"}),
        ("bob", {"Bob"}),
        ("SMITH", {"Bob"}),
        ("example.org", {"Bob"}),
        ("example", {"alice", "Bob", "carolax", "dan", "erin"}),
        ("carol", {"carol_x", "carolax"}),
        ("l_x", {"carol_x"}),
        ("_", {"carol_x"}),
        ("%", {"carolax"}),
        ("0%s", {"carolax"}),
        ("/", {"erin"}),
        ("nobody", set()),
    ],
    ids=[
        "username-part",
        "full-width",
        "username-case",
        "email-part",
        "email-domain",
        "many",
        "prefix",
        "underscore-is-literal",
        "lone-underscore",
        "lone-percent",
        "percent-is-literal",
        "slash",
        "no-match",
    ],
)
def test_search_by_part_of_username_or_email(admin, directory, q, expected):
    response = admin("GET", "/admin/users", query_string={"q": q})
    found = usernames(response)
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert response.json["total"] == len(expected)


def test_pages(admin, register):
    for number in range(1, 6):
        register(f"user{number}")
    register("other")
    pages = [
        admin(
            "GET",
            "/admin/users",
            query_string={"q": "USER", "page": page, "per_page": 2},
        )
        for page in (1, 2, 3, 4)
    ]
    assert [usernames(page) for page in pages] == [
        ["user1", "user2"],
        ["user3", "user4"],
        ["user5"],
        [],
    ]
    assert [page.json["total"] for page in pages] == [5, 5, 5, 5]


def test_per_page_bounds_are_accepted(admin, register):
    register("alice")
    for per_page in (1, 100):
        response = admin("GET", "/admin/users", query_string={"per_page": per_page})
        assert response.status_code == 200
        assert response.json["total"] == 2
        assert len(response.json["users"]) == min(per_page, 2)


def test_empty_parameters_mean_the_defaults(admin, register):
    register("alice")
    response = admin("GET", "/admin/users?q=&page=&per_page=")
    assert usernames(response) == ["alice", "root"]
    assert response.json["total"] == 2


#: What a page or page size out of its range is told.
PAGING = {
    "page": "must be a whole number from 1 to 1000000",
    "per_page": "must be a whole number from 1 to 100",
}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("page", "0"),
        ("page", "-1"),
        ("page", "abc"),
        ("page", "1.5"),
        ("page", " 1"),
        ("per_page", "0"),
        ("per_page", "-1"),
        ("per_page", "abc"),
        ("per_page", "101"),
        ("per_page", "1.5"),
        ("per_page", "1e2"),
    ],
)
def test_bad_paging_parameters(admin, name, value):
    response = admin("GET", "/admin/users", query_string={name: value})
    body = problem(response, "validation_error", 400, errors={name: PAGING[name]})
    assert body["errors"].keys() == {name}
    assert body["errors"][name]


# --- PATCH /admin/users/{id} -----------------------------------------------------


def test_disable_refuses_their_tokens_and_logins(client, admin, register, login):
    target = register("alice")
    sessions = [login("alice"), login("alice")]
    response = admin("PATCH", f"/admin/users/{target['id']}", json={"is_active": False})
    assert response.status_code == 200
    assert response.json == {
        **admin("GET", f"/admin/users/{target['id']}").json,
        "is_active": False,
    }
    for tokens in sessions:
        assert_refused(client, tokens, "invalid_token")
    assert not can_log_in(client, "alice")


def test_enable_again_lets_them_log_in_but_old_sessions_stay_ended(
    client, admin, register, login
):
    target = register("alice")
    old = login("alice")
    path = f"/admin/users/{target['id']}"
    admin("PATCH", path, json={"is_active": False})
    response = admin("PATCH", path, json={"is_active": True})
    assert response.status_code == 200
    assert response.json["is_active"] is True
    assert can_log_in(client, "alice")
    assert_refused(client, old, "token_revoked")


def test_changing_roles_ends_sessions_and_new_tokens_carry_them(
    client, admin, register, login
):
    target = register("alice")
    sessions = [login("alice"), login("alice")]
    response = admin(
        "PATCH", f"/admin/users/{target['id']}", json={"roles": ["support", "auditor"]}
    )
    assert response.status_code == 200
    assert sorted(response.json["roles"]) == ["auditor", "support"]
    for tokens in sessions:
        assert_refused(client, tokens, "token_revoked")
    fresh = login("alice")
    claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
    assert sorted(claims["roles"]) == ["auditor", "support"]
    assert sorted(me(client, fresh).json["roles"]) == ["auditor", "support"]


def test_granted_admin_can_administer(client, admin, register, login):
    target = register("alice")
    admin("PATCH", f"/admin/users/{target['id']}", json={"roles": ["admin"]})
    alice = login("alice")
    response = client.get("/admin/users", headers=bearer(alice["access_token"]))
    assert usernames(response) == ["alice", "root"]


def test_removing_admin_takes_the_endpoints_away(client, admin, runner, login):
    create_user(runner, "deputy", "admin")
    deputy = login("deputy")
    listed = admin("GET", "/admin/users", query_string={"q": "deputy"}).json
    [user] = listed["users"]
    admin("PATCH", f"/admin/users/{user['id']}", json={"roles": []})
    problem(
        client.get("/admin/users", headers=bearer(deputy["access_token"])),
        "token_revoked",
        401,
    )
    fresh = login("deputy")
    response = client.get("/admin/users", headers=bearer(fresh["access_token"]))
    problem(response, "insufficient_scope", 403)


@pytest.mark.parametrize(
    "body",
    [
        {"roles": ["auditor", "support"]},
        {"roles": ["support", "auditor"]},
        {"roles": ["support", "auditor", "support"]},
        {"is_active": True},
        {"roles": ["auditor", "support"], "is_active": True},
        {},
    ],
    ids=["same", "reordered", "repeated", "already-active", "both", "empty"],
)
def test_patch_without_a_change_keeps_sessions(client, admin, runner, login, body):
    create_user(runner, "alice", "support", "auditor")
    tokens = login("alice")
    user_id = me(client, tokens).json["id"]
    before = admin("GET", f"/admin/users/{user_id}").json
    response = admin("PATCH", f"/admin/users/{user_id}", json=body)
    assert response.status_code == 200
    assert response.json == before
    assert_works(client, tokens)
    assert refresh(client, tokens).status_code == 200


BAD_PATCHES = [
    ({"roles": "admin"}, {"roles": "must be a list"}),
    ({"roles": None}, {"roles": "must be a list"}),
    ({"roles": {"admin": True}}, {"roles": "must be a list"}),
    ({"roles": [1]}, {"roles": "must be a string"}),
    ({"roles": ["admin", None]}, {"roles": "must be a string"}),
    ({"roles": [["admin"]]}, {"roles": "must be a string"}),
    ({"roles": [""]}, {"roles": "must be at least 1 characters"}),
    ({"roles": ["r" * 65]}, {"roles": "must be at most 64 characters"}),
    ({"roles": [f"r{n}" for n in range(33)]}, {"roles": "must have at most 32 items"}),
    ({"is_active": "yes"}, {"is_active": "must be true or false"}),
    ({"is_active": "false"}, {"is_active": "must be true or false"}),
    ({"is_active": 0}, {"is_active": "must be true or false"}),
    ({"is_active": None}, {"is_active": "must be true or false"}),
    ({"is_admin": True}, {"is_admin": "is not a known field"}),
    ({"is_active": False, "roles": "admin"}, {"roles": "must be a list"}),
    ({"is_active": False, "password": PASSWORD}, {"password": "is not a known field"}),
]


@pytest.mark.parametrize(("body", "errors"), BAD_PATCHES)
def test_bad_patch_changes_nothing(client, admin, register, login, body, errors):
    target = register("alice")
    tokens = login("alice")
    path = f"/admin/users/{target['id']}"
    before = admin("GET", path).json
    response = admin("PATCH", path, json=body)
    assert problem(response, "validation_error", 400, errors=errors)["errors"] == errors
    assert PASSWORD not in response.get_data(as_text=True)
    assert admin("GET", path).json == before
    assert_works(client, tokens)


@pytest.mark.parametrize(
    ("data", "content_type", "code", "status", "answer"),
    [
        (
            "[]",
            "application/json",
            "validation_error",
            400,
            unreadable(BODY_NOT_AN_OBJECT),
        ),
        (
            '"is_active"',
            "application/json",
            "validation_error",
            400,
            unreadable(BODY_NOT_AN_OBJECT),
        ),
        ("{", "application/json", "validation_error", 400, unreadable(BODY_NOT_JSON)),
        (
            "is_active=false",
            "application/x-www-form-urlencoded",
            "unsupported_media_type",
            415,
            {},
        ),
        ('{"is_active": false}', "text/plain", "unsupported_media_type", 415, {}),
    ],
    ids=["array", "string", "broken", "form", "text"],
)
def test_patch_body_must_be_a_json_object(
    client, admin, register, login, data, content_type, code, status, answer
):
    target = register("alice")
    tokens = login("alice")
    path = f"/admin/users/{target['id']}"
    response = admin("PATCH", path, data=data, content_type=content_type)
    problem(response, code, status, **answer)
    assert admin("GET", path).json["is_active"] is True
    assert_works(client, tokens)


# --- DELETE /admin/users/{id} ----------------------------------------------------


def test_delete_user(client, admin, register, login):
    target = register("alice", email="alice@example.com")
    bystander = register("bob")
    bob = login("bob")
    sessions = [login("alice"), login("alice")]
    path = f"/admin/users/{target['id']}"
    response = admin("DELETE", path)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    problem(admin("GET", path), "not_found", 404, detail="No such user.")
    problem(admin("DELETE", path), "not_found", 404, detail="No such user.")
    for tokens in sessions:
        assert_refused(client, tokens, "invalid_token")
    assert not can_log_in(client, "alice")
    assert usernames(admin("GET", "/admin/users")) == ["bob", "root"]
    assert me(client, bob).json == bystander


def test_deleted_users_names_are_free_again(client, admin, register, login):
    old = register("alice", email="alice@example.com")
    old_tokens = login("alice")
    admin("DELETE", f"/admin/users/{old['id']}")
    new = register("alice", email="alice@example.com")
    assert new["id"] != old["id"]
    problem(me(client, old_tokens), "invalid_token", 401)
    assert me(client, login("alice")).json == new


# --- DELETE /admin/users/{id}/sessions -------------------------------------------


def test_revoke_a_users_sessions(client, admin, admin_token, register, login):
    target = register("alice")
    register("bob")
    bob = login("bob")
    sessions = [login("alice"), login("alice")]
    response = admin("DELETE", f"/admin/users/{target['id']}/sessions")
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    for tokens in sessions:
        assert_refused(client, tokens, "token_revoked")
    assert_works(client, bob)
    assert client.get("/me", headers=bearer(admin_token)).status_code == 200
    assert admin("GET", f"/admin/users/{target['id']}").json["is_active"] is True
    fresh = login("alice")
    assert_works(client, fresh)


def test_revoke_sessions_of_a_user_without_any(admin, register):
    target = register("alice")
    response = admin("DELETE", f"/admin/users/{target['id']}/sessions")
    assert response.status_code == 204


# --- the last active administrator -------------------------------------------------

LAST_ADMIN = {
    "type": "about:blank",
    "title": "Conflict",
    "status": 409,
    "detail": "The service would be left without an active administrator.",
    "code": "last_admin",
}
#: Requests that would take the last active administrator away.
LAST_ADMIN_REMOVALS = [
    ("PATCH", {"is_active": False}),
    ("PATCH", {"roles": []}),
    ("PATCH", {"roles": ["ops"]}),
    ("PATCH", {"roles": ["administrator", "Admin"]}),
    ("PATCH", {"is_active": False, "roles": ["admin"]}),
    ("PATCH", {"is_active": True, "roles": []}),
    ("DELETE", None),
]


def user_id_of(admin, username: str) -> str:
    [user] = admin("GET", "/admin/users", query_string={"q": username}).json["users"]
    return user["id"]


def assert_last_admin(response) -> None:
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.json == LAST_ADMIN


@pytest.mark.parametrize(("method", "body"), LAST_ADMIN_REMOVALS)
def test_the_last_admin_cannot_remove_themselves(
    client, admin, admin_token, method, body
):
    root = user_id_of(admin, "root")
    before = admin("GET", f"/admin/users/{root}").json
    assert_last_admin(admin(method, f"/admin/users/{root}", json=body))
    assert admin("GET", f"/admin/users/{root}").json == before
    assert me(client, {"access_token": admin_token}).status_code == 200


@pytest.mark.parametrize(("method", "body"), LAST_ADMIN_REMOVALS)
def test_another_active_admin_may_be_removed(client, admin, runner, method, body):
    create_user(runner, "deputy", "admin")
    deputy = user_id_of(admin, "deputy")
    response = admin(method, f"/admin/users/{deputy}", json=body)
    assert response.status_code == (204 if method == "DELETE" else 200), response.json
    # Now root is the last one.
    root = user_id_of(admin, "root")
    assert_last_admin(admin(method, f"/admin/users/{root}", json=body))


def test_an_admin_may_step_down_while_another_remains(client, runner, login):
    create_user(runner, "root", "admin")
    create_user(runner, "deputy", "admin")
    root = login("root")
    deputy = login("deputy")
    root_id = me(client, root).json["id"]
    response = client.patch(
        f"/admin/users/{root_id}",
        json={"roles": []},
        headers=bearer(root["access_token"]),
    )
    assert response.status_code == 200
    deputy_id = me(client, deputy).json["id"]
    response = client.delete(
        f"/admin/users/{deputy_id}", headers=bearer(deputy["access_token"])
    )
    assert_last_admin(response)


def test_disabled_admins_do_not_count(client, admin, runner):
    create_user(runner, "deputy", "admin")
    deputy = user_id_of(admin, "deputy")
    assert (
        admin("PATCH", f"/admin/users/{deputy}", json={"is_active": False}).json[
            "is_active"
        ]
        is False
    )
    root = user_id_of(admin, "root")
    assert_last_admin(admin("PATCH", f"/admin/users/{root}", json={"roles": []}))
    # A disabled admin is no active one: removing them leaves root, so it is allowed.
    assert admin("DELETE", f"/admin/users/{deputy}").status_code == 204


def test_the_last_admin_cannot_delete_their_own_account(client, admin, admin_token):
    response = client.delete(
        "/me", json={"password": PASSWORD}, headers=bearer(admin_token)
    )
    assert_last_admin(response)
    assert me(client, {"access_token": admin_token}).status_code == 200


def test_an_admin_may_delete_their_own_account_while_another_remains(
    client, admin, admin_token, runner
):
    create_user(runner, "deputy", "admin")
    response = client.delete(
        "/me", json={"password": PASSWORD}, headers=bearer(admin_token)
    )
    assert response.status_code == 204
    problem(me(client, {"access_token": admin_token}), "invalid_token", 401)


def test_without_any_active_admin_other_changes_still_work(client, runner, register):
    create_user(runner, "root", "admin")
    runner.invoke(
        args=["users", "create", "deputy", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert runner.invoke(args=["users", "disable", "deputy"]).exit_code == 0
    result = runner.invoke(args=["users", "revoke", "deputy", "admin"])
    assert result.exit_code == 0, result.output
