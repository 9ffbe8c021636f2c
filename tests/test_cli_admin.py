"""The authsvc command's administration: users list/disable/enable/set-password/
grant/revoke and sessions revoke/prune."""

from __future__ import annotations

import uuid

import jwt
import pytest
from helpers import PASSWORD, bearer, problem
from sqlalchemy import select

import authsvc.cli
from authsvc.db import get_session
from authsvc.models import AuthSession, RefreshToken, User

NEW_PASSWORD = "purple monkey dishwasher"
DAY = 86400


def stored_user(app, username: str) -> User:
    with app.app_context():
        return get_session().scalar(select(User).where(User.username == username))


def stored_sessions(app) -> dict[uuid.UUID, AuthSession]:
    with app.app_context():
        return {s.id: s for s in get_session().scalars(select(AuthSession))}


def refresh_token_sessions(app) -> set[uuid.UUID]:
    with app.app_context():
        return set(get_session().scalars(select(RefreshToken.session_id)))


def log_in(client, username: str = "alice", password: str = PASSWORD):
    return client.post("/login", json={"username": username, "password": password})


def me(client, access_token: str):
    return client.get("/me", headers=bearer(access_token))


def roles_claim(access_token: str) -> list[str]:
    return jwt.decode(access_token, options={"verify_signature": False})["roles"]


def invoke(runner, *args: str, input: str | None = None, exit_code: int = 0):
    """Run ``authsvc ARGS``, check the exit status, return the output lines."""
    result = runner.invoke(args=list(args), input=input)
    assert result.exit_code == exit_code, result.output
    return result.output.splitlines()


# --- users list --------------------------------------------------------------


@pytest.fixture
def three_users(app, runner, register):
    """alice (e-mail), Bob (roles, disabled), carol (no e-mail)."""
    alice = register("alice", email="alice@example.com")
    invoke(
        runner,
        *("users", "create", "Bob", "--email", "bob@example.org"),
        *("--role", "ops", "--role", "auditor", "--password-stdin"),
        input=PASSWORD + "\n",
    )
    invoke(runner, "users", "disable", "bob")
    carol = register("carol")
    bob_id = str(stored_user(app, "Bob").id)
    return {
        "alice": f"alice\talice@example.com\t-\tactive\t{alice['id']}",
        "bob": f"Bob\tbob@example.org\tauditor,ops\tdisabled\t{bob_id}",
        "carol": f"carol\t-\t-\tactive\t{carol['id']}",
    }


def test_users_list_shows_every_user(runner, three_users):
    assert invoke(runner, "users", "list") == [
        three_users["alice"],
        three_users["bob"],
        three_users["carol"],
        "3 users",
    ]


def test_users_list_pages_through_all_users(runner, three_users, monkeypatch):
    monkeypatch.setattr(authsvc.cli, "LIST_PAGE_SIZE", 2)
    assert invoke(runner, "users", "list") == [
        three_users["alice"],
        three_users["bob"],
        three_users["carol"],
        "3 users",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("EXAMPLE.", ["alice", "bob"]),
        ("example.org", ["bob"]),
        ("CAR", ["carol"]),
        ("nobody", []),
    ],
)
def test_users_list_searches_username_and_email(runner, three_users, query, expected):
    count = f"{len(expected)} user" + ("" if len(expected) == 1 else "s")
    assert invoke(runner, "users", "list", "--query", query) == [
        *(three_users[name] for name in expected),
        count,
    ]


def test_users_list_with_no_users(runner):
    assert invoke(runner, "users", "list") == ["0 users"]


# --- unknown users -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "input"),
    [
        (["users", "disable", "nobody"], None),
        (["users", "enable", "nobody"], None),
        (["users", "set-password", "nobody", "--password-stdin"], NEW_PASSWORD + "\n"),
        (["users", "set-password", "nobody"], None),
        (["users", "grant", "nobody", "admin"], None),
        (["users", "revoke", "nobody", "admin"], None),
        (["sessions", "revoke", "nobody"], None),
    ],
)
def test_unknown_user_exits_1(runner, register, args, input):
    register("alice")
    lines = invoke(runner, *args, input=input, exit_code=1)
    assert lines == ["Error: no such user: nobody"]


# --- users disable / enable ----------------------------------------------------


def test_disable_refuses_login_and_existing_tokens(app, client, runner, register):
    register("alice")
    tokens = log_in(client).json

    assert invoke(runner, "users", "disable", "ALICE") == ["disabled alice"]

    problem(log_in(client), "invalid_credentials", 401)
    problem(me(client, tokens["access_token"]), "invalid_token", 401)
    problem(
        client.post("/refresh", json={"refresh_token": tokens["refresh_token"]}),
        "invalid_refresh_token",
        401,
    )
    assert stored_user(app, "alice").is_active is False
    [session] = stored_sessions(app).values()
    assert session.revoked_reason == "disabled"


def test_enable_lets_the_user_log_in_again(app, client, runner, register):
    register("alice", email="alice@example.com")
    tokens = log_in(client).json
    invoke(runner, "users", "disable", "alice")

    assert invoke(runner, "users", "enable", "Alice@Example.com") == ["enabled alice"]

    assert stored_user(app, "alice").is_active is True
    fresh = log_in(client)
    assert fresh.status_code == 200
    assert me(client, fresh.json["access_token"]).status_code == 200
    # Sessions revoked by disabling stay revoked.
    problem(me(client, tokens["access_token"]), "token_revoked", 401)


# --- users set-password --------------------------------------------------------


def test_set_password_from_stdin(app, client, runner, register):
    register("alice")
    tokens = log_in(client).json

    lines = invoke(
        runner,
        *("users", "set-password", "alice", "--password-stdin"),
        input=NEW_PASSWORD + "\n",
    )

    assert lines == ["changed the password of alice; their sessions are revoked"]
    problem(log_in(client), "invalid_credentials", 401)
    assert log_in(client, password=NEW_PASSWORD).status_code == 200
    problem(me(client, tokens["access_token"]), "token_revoked", 401)
    old = stored_sessions(app)[uuid.UUID(tokens["session_id"])]
    assert old.revoked_reason == "password_changed"


def test_set_password_prompts_twice(client, runner, register):
    register("alice")
    result = runner.invoke(
        args=["users", "set-password", "alice"],
        input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert NEW_PASSWORD not in result.output
    assert result.output.count("New password") == 1
    assert result.output.count("Repeat for confirmation") == 1
    assert log_in(client, password=NEW_PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "password must be at least 8 characters"),
        ("password123", "password is too common"),
        ("", "password must be at least 8 characters"),
    ],
)
def test_set_password_applies_the_policy(
    app, client, runner, register, password, message
):
    register("alice")
    tokens = log_in(client).json
    before = stored_user(app, "alice").password_hash

    lines = invoke(
        runner,
        *("users", "set-password", "alice", "--password-stdin"),
        input=password + "\n",
        exit_code=1,
    )

    assert lines == [f"Error: {message}"]
    assert stored_user(app, "alice").password_hash == before
    assert log_in(client).status_code == 200
    assert me(client, tokens["access_token"]).status_code == 200


# --- users grant / revoke ------------------------------------------------------


def test_grant_adds_the_role_and_revokes_sessions(app, client, runner, register):
    register("alice")
    tokens = log_in(client).json
    assert roles_claim(tokens["access_token"]) == []

    assert invoke(runner, "users", "grant", "alice", "ops") == [
        "granted ops to alice; their sessions are revoked"
    ]
    assert invoke(runner, "users", "grant", "alice", "admin") == [
        "granted admin to alice; their sessions are revoked"
    ]

    assert stored_user(app, "alice").roles == ["admin", "ops"]
    problem(me(client, tokens["access_token"]), "token_revoked", 401)
    assert roles_claim(log_in(client).json["access_token"]) == ["admin", "ops"]


def test_revoke_removes_the_role_and_revokes_sessions(app, client, runner, register):
    register("alice")
    register("root")
    invoke(runner, "users", "grant", "root", "admin")
    invoke(runner, "users", "grant", "alice", "admin")
    invoke(runner, "users", "grant", "alice", "ops")
    tokens = log_in(client).json
    assert roles_claim(tokens["access_token"]) == ["admin", "ops"]

    assert invoke(runner, "users", "revoke", "alice", "admin") == [
        "revoked admin from alice; their sessions are revoked"
    ]

    assert stored_user(app, "alice").roles == ["ops"]
    problem(me(client, tokens["access_token"]), "token_revoked", 401)
    assert roles_claim(log_in(client).json["access_token"]) == ["ops"]


@pytest.mark.parametrize(
    ("command", "role", "message"),
    [
        ("grant", "ops", "alice already has the role ops"),
        ("revoke", "admin", "alice does not have the role admin"),
    ],
)
def test_grant_or_revoke_without_change_is_a_no_op(
    app, client, runner, register, command, role, message
):
    register("alice")
    invoke(runner, "users", "grant", "alice", "ops")
    tokens = log_in(client).json
    before = stored_user(app, "alice").updated_at

    assert invoke(runner, "users", command, "alice", role) == [message]

    user = stored_user(app, "alice")
    assert (user.roles, user.updated_at) == (["ops"], before)
    assert me(client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("command", ["grant", "revoke"])
@pytest.mark.parametrize("role", ["", "a" * 65, "ad min", "ops/x", "rôle", "ops\n"])
def test_grant_or_revoke_refuses_a_malformed_role(app, runner, register, command, role):
    register("alice")

    lines = invoke(runner, "users", command, "alice", role, exit_code=1)

    assert lines == [
        f"Error: invalid role {role!r}: must be 1 to 64 characters of letters,"
        " digits, '.', '_', ':' or '-'"
    ]
    assert stored_user(app, "alice").roles == []


@pytest.mark.parametrize("role", ["a", "a" * 64, "ops.read", "api:write", "A_b-9"])
def test_grant_accepts_well_formed_roles(app, runner, register, role):
    register("alice")
    invoke(runner, "users", "grant", "alice", role)
    assert stored_user(app, "alice").roles == [role]


# --- sessions revoke -----------------------------------------------------------


def test_sessions_revoke_ends_every_session_of_the_user(app, client, runner, register):
    register("alice")
    register("bob")
    alice = [log_in(client).json for _ in range(2)]
    bob = log_in(client, "bob").json

    assert invoke(runner, "sessions", "revoke", "alice") == [
        "revoked 2 sessions of alice"
    ]

    for tokens in alice:
        problem(
            me(client, tokens["access_token"]),
            "token_revoked",
            401,
        )
    assert me(client, bob["access_token"]).status_code == 200
    reasons = {
        str(session.id): session.revoked_reason
        for session in stored_sessions(app).values()
    }
    assert reasons == {
        alice[0]["session_id"]: "admin",
        alice[1]["session_id"]: "admin",
        bob["session_id"]: None,
    }
    assert invoke(runner, "sessions", "revoke", "alice") == [
        "revoked 0 sessions of alice"
    ]
    log_in(client)
    assert invoke(runner, "sessions", "revoke", "alice") == [
        "revoked 1 session of alice"
    ]


# --- sessions prune ------------------------------------------------------------


@pytest.mark.parametrize("batch", [[], ["--batch-size", "1"]])
def test_sessions_prune_deletes_exactly_the_dead_sessions(
    app, client, runner, register, clock, make_app, batch
):
    register("alice")
    live = log_in(client).json
    revoked_long_ago = log_in(client).json
    # Give the revoked session a rotation chain of two refresh tokens.
    rotated = client.post(
        "/refresh", json={"refresh_token": revoked_long_ago["refresh_token"]}
    )
    assert rotated.status_code == 200
    logout = client.post("/logout", headers=bearer(rotated.json["access_token"]))
    assert logout.status_code == 204
    short_client = make_app(SESSION_TTL=60).test_client()
    expired = log_in(short_client).json

    clock.advance(60 + DAY + 1)
    # Revoked, and expired, less than a day ago: kept for now.
    revoked_recently = log_in(client).json
    logout = client.post("/logout", headers=bearer(revoked_recently["access_token"]))
    assert logout.status_code == 204
    expired_recently = log_in(make_app(SESSION_TTL=1).test_client()).json
    clock.advance(2)
    kept = {
        uuid.UUID(tokens["session_id"])
        for tokens in (live, revoked_recently, expired_recently)
    }
    dead = {uuid.UUID(t["session_id"]) for t in (revoked_long_ago, expired)}
    assert set(stored_sessions(app)) == refresh_token_sessions(app) == kept | dead

    assert invoke(runner, "sessions", "prune", *batch)[0] == "pruned 2 sessions"

    assert set(stored_sessions(app)) == kept
    assert refresh_token_sessions(app) == kept

    # The live session still refreshes, and its new access token works.
    refreshed = client.post("/refresh", json={"refresh_token": live["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    assert me(client, refreshed.json["access_token"]).status_code == 200

    assert invoke(runner, "sessions", "prune", *batch)[0] == "pruned 0 sessions"


@pytest.mark.parametrize("size", ["0", "-1", "x"])
def test_sessions_prune_refuses_a_bad_batch_size(runner, size):
    result = runner.invoke(args=["sessions", "prune", "--batch-size", size])
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size'" in result.output


def test_sessions_prune_removes_spent_throttle_counters(
    runner, client, register, clock
):
    register("alice")
    for _ in range(2):
        client.post("/login", json={"username": "alice", "password": "wrong guess!"})
    # Failed logins of the account and of the address, registrations of the
    # address: three counters, all still in their one-minute window.
    assert (
        invoke(runner, "sessions", "prune")[1] == "pruned 0 expired throttle counters"
    )
    clock.advance(61)
    assert (
        invoke(runner, "sessions", "prune")[1] == "pruned 3 expired throttle counters"
    )


# --- the last active administrator -----------------------------------------------

LAST_ADMIN_ERROR = "Error: The service would be left without an active administrator."


@pytest.mark.parametrize(
    "args",
    [["users", "disable", "root"], ["users", "revoke", "ROOT", "admin"]],
    ids=["disable", "revoke"],
)
def test_the_last_admin_cannot_be_removed(app, client, runner, args):
    invoke(
        runner,
        *("users", "create", "root", "--role", "admin", "--password-stdin"),
        input=PASSWORD + "\n",
    )
    tokens = log_in(client, "root").json

    assert invoke(runner, *args, exit_code=1) == [LAST_ADMIN_ERROR]

    user = stored_user(app, "root")
    assert (user.is_active, user.roles) == (True, ["admin"])
    assert me(client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "args",
    [["users", "disable", "root"], ["users", "revoke", "root", "admin"]],
    ids=["disable", "revoke"],
)
def test_an_admin_can_be_removed_while_another_remains(app, runner, args):
    for name in ("root", "deputy"):
        invoke(
            runner,
            *("users", "create", name, "--role", "admin", "--password-stdin"),
            input=PASSWORD + "\n",
        )
    invoke(runner, *args)
    assert invoke(runner, "users", "disable", "deputy", exit_code=1) == [
        LAST_ADMIN_ERROR
    ]
