"""E-mail verification and change through a real SMTP server, and the login that
asks for a verified address."""

from __future__ import annotations

import pytest
from helpers import PASSWORD, bearer, problem, sign_in
from smtp_catcher import CODE_LINE, Mailbox, code_of, text_of, token_of
from sqlalchemy import select, update

from authsvc import mail_sender
from authsvc.db import get_session
from authsvc.models import User

LINK_BASE = "https://app.example.com"
CHALLENGE = 'Bearer realm="authsvc"'


@pytest.fixture
def mailbox():
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture
def settings(settings, mailbox):
    return {
        **settings,
        "MAIL_BACKEND": "smtp",
        "SMTP_URL": mailbox.url,
        "LINK_BASE_URL": LINK_BASE,
        "MAIL_RATE_LIMIT": "1000 per hour",
        "MAIL_CLIENT_RATE_LIMIT": "1000 per hour",
    }


def deliver(app) -> int:
    with app.app_context():
        return mail_sender.send_pending()


def user_of(app, username: str) -> User:
    with app.app_context():
        db = get_session()
        user = db.scalar(select(User).where(User.username == username))
        db.expunge_all()
        return user


def expected_user(app, username: str, **changes) -> dict:
    user = user_of(app, username)
    body = {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "email_verified": user.email_verified,
        "roles": [],
        "mfa_enabled": False,
        "created_at": user.created_at.isoformat().replace("+00:00", "Z"),
    }
    return {**body, **changes}


@pytest.fixture
def alice(app, client, register, mailbox):
    """``alice`` with an unverified address, logged in; her message delivered."""
    register("alice", email="alice@example.com")
    assert deliver(app) == 1
    return sign_in(client, "alice")


def test_registration_with_an_address_sends_a_verification_message(
    app, client, mailbox, register
):
    body = register("bob", email="Bob@Example.com")
    assert body["email_verified"] is False
    assert mailbox.messages == []

    assert deliver(app) == 1

    (message,) = mailbox.messages
    assert message["To"] == "Bob@Example.com"
    assert message["Subject"] == "Confirm your e-mail address"
    assert f"{LINK_BASE}/verify-email?token={token_of(message)}" in text_of(message)
    assert len(CODE_LINE.findall(text_of(message))) == 1


def test_registration_without_an_address_sends_nothing(app, register, mailbox):
    register("carol")
    assert deliver(app) == 0


def test_verify_by_address_and_code(app, client, mailbox, alice):
    code = code_of(mailbox.messages[0])

    response = client.post(
        "/email/verify", json={"email": "ALICE@example.com", "code": code}
    )

    assert response.status_code == 200
    assert response.json == expected_user(app, "alice", email_verified=True)
    me = client.get("/me", headers=bearer(alice["access_token"]))
    assert me.json["email_verified"] is True
    again = client.post(
        "/email/verify", json={"email": "alice@example.com", "code": code}
    )
    problem(again, "invalid_code", 400)


def test_verify_by_link_token_needs_no_bearer(app, client, mailbox, alice):
    token = token_of(mailbox.messages[0])
    response = client.post("/email/verify", json={"token": token})
    assert response.status_code == 200
    assert response.json["email_verified"] is True
    problem(client.post("/email/verify", json={"token": token}), "invalid_code", 400)


def test_a_reset_code_does_not_verify(app, client, mailbox, alice):
    client.post("/password/forgot", json={"email": "alice@example.com"})
    deliver(app)
    reset = mailbox.messages[-1]
    problem(
        client.post("/email/verify", json={"token": token_of(reset)}),
        "invalid_code",
        400,
    )


def test_verification_codes_expire(app, client, clock, mailbox, alice):
    token = token_of(mailbox.messages[0])
    clock.advance(86400)
    problem(client.post("/email/verify", json={"token": token}), "invalid_code", 400)


def test_asking_again_sends_a_new_code_that_replaces_the_first(
    app, client, mailbox, alice
):
    first = mailbox.messages[0]
    response = client.post("/me/email/verify", headers=bearer(alice["access_token"]))
    assert response.status_code == 202
    assert response.json == {}
    assert deliver(app) == 1
    second = mailbox.messages[1]
    assert second["To"] == "alice@example.com"

    problem(
        client.post("/email/verify", json={"token": token_of(first)}),
        "invalid_code",
        400,
    )
    response = client.post("/email/verify", json={"token": token_of(second)})
    assert response.status_code == 200


def test_asking_to_verify_a_verified_address_is_a_conflict(app, client, mailbox, alice):
    client.post("/email/verify", json={"token": token_of(mailbox.messages[0])})
    response = client.post("/me/email/verify", headers=bearer(alice["access_token"]))
    problem(response, "already_verified", 409)


def test_asking_to_verify_without_an_address_is_a_validation_error(client, register):
    register("carol")
    tokens = sign_in(client, "carol")
    response = client.post("/me/email/verify", headers=bearer(tokens["access_token"]))
    problem(
        response,
        "validation_error",
        400,
        detail="The account has no e-mail address.",
        errors={"email": "the account has no e-mail address"},
    )


def test_asking_to_verify_needs_a_bearer(client):
    response = client.post("/me/email/verify")
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_five_wrong_verification_codes_burn_it(app, client, mailbox, alice):
    code = code_of(mailbox.messages[0])
    for step in range(1, 6):
        guess = f"{(int(code) + step) % 1000000:06d}"
        response = client.post(
            "/email/verify", json={"email": "alice@example.com", "code": guess}
        )
        problem(response, "invalid_code", 400)
    response = client.post(
        "/email/verify", json={"email": "alice@example.com", "code": code}
    )
    problem(response, "invalid_code", 400)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"email": "is required", "code": "is required"}),
        ({"code": "123456"}, {"email": "is required"}),
        (
            {"token": "t", "email": "a@b.example"},
            {"email": "must not be given with token"},
        ),
        ({"token": ["t"]}, {"token": "must be a string"}),
        (
            {"email": "nope", "code": "123456"},
            {"email": "must be a valid e-mail address"},
        ),
        ({"token": "t", "extra": True}, {"extra": "is not a known field"}),
    ],
)
def test_verify_refuses_bad_bodies(client, body, errors):
    response = client.post("/email/verify", json=body)
    problem(response, "validation_error", 400, errors=errors)


# --- changing the address -------------------------------------------------------


def change(client, tokens, email="new@example.com", password=PASSWORD):
    return client.post(
        "/me/email",
        json={"email": email, "password": password},
        headers=bearer(tokens["access_token"]),
    )


def test_a_change_sends_a_code_to_the_new_address_and_a_notice_to_the_old(
    app, client, mailbox, alice
):
    mailbox.messages.clear()
    response = change(client, alice)
    assert response.status_code == 202
    assert response.json == {}

    assert deliver(app) == 2

    (coded,) = mailbox.to("new@example.com")
    (notice,) = mailbox.to("alice@example.com")
    assert coded["Subject"] == "Confirm your new e-mail address"
    assert f"{LINK_BASE}/verify-email?token={token_of(coded)}" in text_of(coded)
    assert notice["Subject"] == "Your e-mail address is being changed"
    assert CODE_LINE.findall(text_of(notice)) == []
    assert "token=" not in text_of(notice)
    # Nothing changes until the new address confirms it.
    assert user_of(app, "alice").email == "alice@example.com"


def test_confirming_by_code_sets_the_new_address_verified(app, client, mailbox, alice):
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    code = code_of(mailbox.to("new@example.com")[0])

    response = client.post(
        "/me/email/confirm", json={"code": code}, headers=bearer(alice["access_token"])
    )

    assert response.status_code == 200
    assert response.json == expected_user(
        app, "alice", email="new@example.com", email_verified=True
    )
    sign_in(client, "new@example.com")
    problem(
        client.post(
            "/me/email/confirm",
            json={"code": code},
            headers=bearer(alice["access_token"]),
        ),
        "invalid_code",
        400,
    )


def test_confirming_by_link_token(app, client, mailbox, alice):
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    token = token_of(mailbox.to("new@example.com")[0])
    response = client.post(
        "/me/email/confirm",
        json={"token": token},
        headers=bearer(alice["access_token"]),
    )
    assert response.status_code == 200
    assert response.json["email"] == "new@example.com"


def test_a_change_link_also_works_without_a_bearer(app, client, mailbox, alice):
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    token = token_of(mailbox.to("new@example.com")[0])
    response = client.post("/email/verify", json={"token": token})
    assert response.status_code == 200
    assert response.json == expected_user(
        app, "alice", email="new@example.com", email_verified=True
    )


def test_another_users_change_token_is_refused(app, client, mailbox, alice, register):
    register("bob")
    bob = sign_in(client, "bob")
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    token = token_of(mailbox.to("new@example.com")[0])
    response = client.post(
        "/me/email/confirm", json={"token": token}, headers=bearer(bob["access_token"])
    )
    problem(response, "invalid_code", 400)


def test_a_wrong_password_is_refused_with_a_challenge(client, alice):
    response = change(client, alice, password="wrong password!")
    problem(response, "invalid_credentials", 401, detail="The password is incorrect.")
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_a_wrong_password_counts_towards_login_throttling(make_app, mailbox, register):
    app = make_app(LOGIN_RATE_LIMIT="2 per minute")
    client = app.test_client()
    client.post("/users", json={"username": "eve", "password": PASSWORD})
    tokens = sign_in(client, "eve")
    for _ in range(2):
        response = change(client, tokens, password="wrong!")
        problem(
            response, "invalid_credentials", 401, detail="The password is incorrect."
        )
    response = change(client, tokens, password="wrong!")
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")


def test_an_address_of_another_account_is_a_conflict(client, alice, register):
    register("bob", email="bob@example.com")
    response = change(client, alice, email="BOB@example.com")
    problem(
        response, "already_exists", 409, detail="The e-mail address is already taken."
    )


def test_an_address_taken_before_confirmation_is_a_conflict(
    app, client, mailbox, alice, register
):
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    code = code_of(mailbox.to("new@example.com")[0])
    register("bob", email="new@example.com")
    response = client.post(
        "/me/email/confirm", json={"code": code}, headers=bearer(alice["access_token"])
    )
    problem(
        response, "already_exists", 409, detail="The e-mail address is already taken."
    )
    assert user_of(app, "alice").email == "alice@example.com"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"email": "is required", "password": "is required"}),
        (
            {"email": "bad", "password": PASSWORD},
            {"email": "must be a valid e-mail address"},
        ),
        ({"email": "a@b.example", "password": 1}, {"password": "must be a string"}),
    ],
)
def test_change_refuses_bad_bodies(client, alice, body, errors):
    response = client.post(
        "/me/email", json=body, headers=bearer(alice["access_token"])
    )
    problem(response, "validation_error", 400, errors=errors)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"code": "is required"}),
        ({"code": "123456", "token": "t"}, {"code": "must not be given with token"}),
        ({"code": 123456}, {"code": "must be a string"}),
    ],
)
def test_confirm_refuses_bad_bodies(client, alice, body, errors):
    response = client.post(
        "/me/email/confirm", json=body, headers=bearer(alice["access_token"])
    )
    problem(response, "validation_error", 400, errors=errors)


def test_confirm_without_a_pending_change_is_an_invalid_code(client, alice):
    response = client.post(
        "/me/email/confirm",
        json={"code": "123456"},
        headers=bearer(alice["access_token"]),
    )
    problem(response, "invalid_code", 400)


# --- login with AUTHSVC_REQUIRE_VERIFIED_EMAIL ------------------------------------


@pytest.fixture
def strict(make_app, mailbox):
    app = make_app(REQUIRE_VERIFIED_EMAIL=True)
    client = app.test_client()
    response = client.post(
        "/users",
        json={"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
    )
    assert response.status_code == 201
    deliver(app)
    return app, client


def test_an_unverified_account_with_its_password_is_refused_403(strict):
    _app, client = strict
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    problem(response, "email_not_verified", 403)


def test_an_unverified_account_with_a_wrong_password_is_refused_401(strict):
    _app, client = strict
    response = client.post(
        "/login", json={"username": "alice", "password": "wrong password!"}
    )
    problem(response, "invalid_credentials", 401)


def test_an_account_without_an_address_is_refused_403(strict):
    _app, client = strict
    client.post("/users", json={"username": "carol", "password": PASSWORD})
    response = client.post("/login", json={"username": "carol", "password": PASSWORD})
    problem(response, "email_not_verified", 403)


def test_a_verified_account_logs_in(strict, mailbox):
    _app, client = strict
    token = token_of(mailbox.messages[0])
    assert client.post("/email/verify", json={"token": token}).status_code == 200
    sign_in(client, "alice")


def test_unverified_logins_are_allowed_by_default(client, alice):
    assert alice["token_type"] == "Bearer"


def test_an_email_change_leaves_the_new_address_verified(app, client, mailbox, alice):
    with app.app_context():
        db = get_session()
        db.execute(update(User).values(email_verified=False))
        db.commit()
    mailbox.messages.clear()
    change(client, alice)
    deliver(app)
    token = token_of(mailbox.to("new@example.com")[0])
    response = client.post("/email/verify", json={"token": token})
    assert response.json["email_verified"] is True
