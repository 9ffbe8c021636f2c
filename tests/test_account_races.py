"""Account changes that land while a login checks the password (in-process).

The change is made from inside the login's password check, exactly where a
racing request would land: after the login read the user, before it opened its
session. The live versions, with real concurrency, are in
``test_account_races_live.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import PASSWORD, bearer, problem
from sqlalchemy import func, select

from authsvc import accounts, admin, users
from authsvc.db import get_session
from authsvc.models import AuthSession, User
from authsvc.passwords import get_passwords

NEW_PASSWORD = "purple monkey dishwasher 42"


@pytest.fixture
def during_next_login(monkeypatch):
    """Run ``change`` once, right after the next login's password check of ``app``."""

    def arm(app, change: Callable[[], None]) -> None:
        with app.app_context():
            passwords = get_passwords()
        verify = passwords.verify
        armed = [True]

        def verify_then_change(stored_hash: str, password: str):
            verified = verify(stored_hash, password)
            if armed and password == PASSWORD:
                armed.clear()  # the change may check passwords of its own
                change()
            return verified

        monkeypatch.setattr(passwords, "verify", verify_then_change)

    return arm


def attempt(client, username: str = "alice", password: str = PASSWORD):
    return client.post("/login", json={"username": username, "password": password})


def comparable(response) -> tuple[int, bytes, list[tuple[str, str]]]:
    varying = {"date", "x-request-id"}
    headers = [(k, v) for k, v in response.headers if k.lower() not in varying]
    return response.status_code, response.data, headers


def assert_failed_as_unknown(client, response) -> None:
    """The answer a login of a user who never existed gets, byte for byte."""
    problem(response, "invalid_credentials", 401)
    assert comparable(response) == comparable(attempt(client, "nobody-at-all"))


def live_sessions(app, username: str = "alice") -> int:
    with app.app_context():
        return get_session().scalar(
            select(func.count())
            .select_from(AuthSession)
            .join(User)
            .where(User.username == username, AuthSession.revoked_at.is_(None))
        )


def in_context(app, change: Callable[[accounts.User], None]) -> Callable[[], None]:
    """``change`` of alice in an app context of its own, as another request has."""

    def run() -> None:
        with app.app_context():
            change(users.find_user_by_name("alice"))

    return run


def test_a_password_change_during_a_login_leaves_it_no_session(
    app, client, tokens, during_next_login
):
    def change_password() -> None:
        response = client.post(
            "/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(tokens["access_token"]),
        )
        assert response.status_code == 204, response.json

    during_next_login(app, change_password)
    assert_failed_as_unknown(client, attempt(client))
    assert live_sessions(app) == 1  # the one that changed the password
    problem(attempt(client), "invalid_credentials", 401)
    assert attempt(client, password=NEW_PASSWORD).status_code == 200


def test_a_rehash_during_a_password_change_does_not_undo_it(
    app, client, register, make_app, during_next_login
):
    register("alice")
    # Stronger parameters than the hash was made with: a login rehashes it.
    stronger = make_app(ARGON2_TIME_COST=2)
    other = stronger.test_client()

    def set_password() -> None:
        with stronger.app_context():
            admin.set_password(users.find_user_by_name("alice"), NEW_PASSWORD)

    during_next_login(stronger, set_password)
    raced = attempt(other)
    # The racing login's rehash did not put the old password back.
    problem(attempt(other), "invalid_credentials", 401)
    assert attempt(other, password=NEW_PASSWORD).status_code == 200
    assert_failed_as_unknown(other, raced)
    assert live_sessions(app) == 1  # the login with the new password


def test_an_unraced_rehash_still_happens(app, client, register, make_app):
    register("alice")
    with app.app_context():
        before = users.find_user_by_name("alice").password_hash
    stronger = make_app(ARGON2_TIME_COST=2)
    assert attempt(stronger.test_client()).status_code == 200
    with app.app_context():
        after = users.find_user_by_name("alice").password_hash
    assert after != before
    assert "t=2," in after
    assert attempt(client).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda user: admin.set_active(user, False), id="disable"),
        pytest.param(
            lambda user: (
                admin.set_active(user, False),
                admin.set_active(user, True),
            ),
            id="disable-and-enable",
        ),
        pytest.param(lambda user: admin.set_roles(user, ["ops"]), id="roles"),
        pytest.param(
            lambda user: admin.set_password(user, NEW_PASSWORD), id="set-password"
        ),
    ],
)
def test_an_account_change_during_a_login_leaves_it_no_session(
    app, client, register, during_next_login, change
):
    register("alice")
    during_next_login(app, in_context(app, change))
    assert_failed_as_unknown(client, attempt(client))
    assert live_sessions(app) == 0


def test_re_enabling_does_not_bring_back_a_session_that_raced_the_disabling(
    app, client, register, during_next_login
):
    register("alice")
    during_next_login(app, in_context(app, lambda user: admin.set_active(user, False)))
    assert_failed_as_unknown(client, attempt(client))
    in_context(app, lambda user: admin.set_active(user, True))()
    assert live_sessions(app) == 0
    assert attempt(client).status_code == 200
    assert live_sessions(app) == 1


def test_a_deletion_during_a_login_answers_as_for_an_unknown_user(
    app, client, register, during_next_login
):
    register("alice")
    during_next_login(app, in_context(app, accounts.delete_user))
    assert_failed_as_unknown(client, attempt(client))
    with app.app_context():
        assert get_session().scalar(select(func.count()).select_from(AuthSession)) == 0
