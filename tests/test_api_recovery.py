"""Password reset through a real SMTP server: POST /password/forgot and /reset.

Codes and links are read out of the messages aiosmtpd received; the sender is
driven one pass at a time with the injected clock.
"""

from __future__ import annotations

import threading

import pytest
from helpers import (
    PASSWORD,
    assert_refused,
    bearer,
    problem,
    sign_in,
)
from smtp_catcher import CODE_LINE, Mailbox, code_of, text_of, token_of
from sqlalchemy import event, select, update

from authsvc import mail_sender
from authsvc.db import Base, get_session
from authsvc.driver import DriverStatement
from authsvc.models import OutboxMessage, User
from authsvc.outbox import claim

NEW_PASSWORD = "purple monkey dishwasher 42"
LINK_BASE = "https://app.example.com"


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
    """One pass of the sender, as a serving worker's thread runs it."""
    with app.app_context():
        return mail_sender.send_pending()


@pytest.fixture
def alice(app, register, mailbox):
    """``alice`` with an address, her registration's verification message sent."""
    user = register("alice", email="alice@example.com")
    deliver(app)
    mailbox.messages.clear()
    return user


def forgot(client, email="alice@example.com", address="192.0.2.10"):
    return client.post(
        "/password/forgot", json={"email": email}, environ_base={"REMOTE_ADDR": address}
    )


def reset_mail(app, client, mailbox, email="alice@example.com"):
    """Ask for a reset and return the message that arrives."""
    response = forgot(client, email)
    assert response.status_code == 202, response.json
    before = len(mailbox.messages)
    assert deliver(app) == 1
    assert len(mailbox.messages) == before + 1
    return mailbox.messages[-1]


def reset(client, **body):
    return client.post("/password/reset", json={"new_password": NEW_PASSWORD, **body})


def test_forgot_queues_and_the_sender_sends_a_reset_message(
    app, client, mailbox, alice
):
    response = forgot(client)
    assert response.status_code == 202
    assert response.json == {}
    assert mailbox.messages == []  # answered before anything is sent

    assert deliver(app) == 1

    (message,) = mailbox.messages
    assert message["From"] == "authsvc@localhost"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Your password reset code"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = text_of(message)
    assert len(CODE_LINE.findall(body)) == 1
    token = token_of(message)
    assert f"{LINK_BASE}/reset-password?token={token}" in body
    assert len(token) >= 43  # 256 bits, base64url
    assert deliver(app) == 0  # sent once
    with app.app_context():
        assert get_session().scalars(select(OutboxMessage)).all() == []


def test_reset_by_code_changes_the_password_once(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))

    response = reset(client, email="alice@example.com", code=code)

    assert response.status_code == 204
    assert response.data == b""
    sign_in(client, "alice", password=NEW_PASSWORD)
    problem(
        client.post("/login", json={"username": "alice", "password": PASSWORD}),
        "invalid_credentials",
        401,
    )
    again = reset(client, email="alice@example.com", code=code)
    problem(again, "invalid_code", 400)


def test_reset_by_link_token_changes_the_password_once(app, client, mailbox, alice):
    token = token_of(reset_mail(app, client, mailbox))

    assert reset(client, token=token).status_code == 204
    sign_in(client, "alice", password=NEW_PASSWORD)
    problem(reset(client, token=token), "invalid_code", 400)


def test_the_code_and_the_link_of_one_message_work_once_between_them(
    app, client, mailbox, alice
):
    message = reset_mail(app, client, mailbox)
    assert reset(client, token=token_of(message)).status_code == 204
    problem(
        reset(client, email="alice@example.com", code=code_of(message)),
        "invalid_code",
        400,
    )


def test_the_address_is_compared_case_insensitively(app, client, mailbox, alice):
    message = reset_mail(app, client, mailbox, email="ALICE@Example.com")
    assert message["To"] == "alice@example.com"
    code = code_of(message)
    assert reset(client, email="Alice@EXAMPLE.com", code=code).status_code == 204


def test_a_newer_request_replaces_the_older_code_and_link(app, client, mailbox, alice):
    first = reset_mail(app, client, mailbox)
    second = reset_mail(app, client, mailbox)

    problem(reset(client, token=token_of(first)), "invalid_code", 400)
    if code_of(first) != code_of(second):
        problem(
            reset(client, email="alice@example.com", code=code_of(first)),
            "invalid_code",
            400,
        )
    assert reset(client, token=token_of(second)).status_code == 204


def test_a_code_expires(app, client, clock, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))
    clock.advance(3600)
    problem(reset(client, email="alice@example.com", code=code), "invalid_code", 400)


def test_a_code_lives_as_long_as_configured(make_app, mailbox, alice, clock):
    app = make_app(PASSWORD_RESET_TTL=60)
    client = app.test_client()
    message = reset_mail(app, client, mailbox)
    assert "works once, for 1 minute." in text_of(message)
    clock.advance(59)
    assert reset(client, token=token_of(message)).status_code == 204


def test_five_wrong_codes_burn_the_code(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))
    wrong = [f"{(int(code) + step) % 1000000:06d}" for step in range(1, 6)]
    for guess in wrong:
        problem(
            reset(client, email="alice@example.com", code=guess), "invalid_code", 400
        )

    problem(reset(client, email="alice@example.com", code=code), "invalid_code", 400)


def test_four_wrong_codes_leave_the_right_one_working(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))
    for step in range(1, 5):
        guess = f"{(int(code) + step) % 1000000:06d}"
        problem(
            reset(client, email="alice@example.com", code=guess), "invalid_code", 400
        )
    assert reset(client, email="alice@example.com", code=code).status_code == 204


def test_a_weak_new_password_keeps_the_code_usable(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))

    weak = client.post(
        "/password/reset",
        json={"email": "alice@example.com", "code": code, "new_password": "password"},
    )

    problem(
        weak,
        "validation_error",
        400,
        errors={"new_password": "is too common"},
    )
    assert reset(client, email="alice@example.com", code=code).status_code == 204


def test_a_reset_revokes_every_session(app, client, mailbox, alice):
    first = sign_in(client, "alice")
    second = sign_in(client, "alice")
    code = code_of(reset_mail(app, client, mailbox))

    assert reset(client, email="alice@example.com", code=code).status_code == 204

    assert_refused(client, first)
    assert_refused(client, second)


def test_a_reset_sends_a_notice_without_a_code(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))
    assert reset(client, email="alice@example.com", code=code).status_code == 204

    assert deliver(app) == 1
    notice = mailbox.messages[-1]
    assert notice["To"] == "alice@example.com"
    assert notice["Subject"] == "Your password was reset"
    assert CODE_LINE.findall(text_of(notice)) == []
    assert "token=" not in text_of(notice)


def test_a_password_change_sends_a_notice(app, client, mailbox, alice):
    tokens = sign_in(client, "alice")
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    deliver(app)
    notices = [
        m for m in mailbox.messages if m["Subject"] == "Your password was changed"
    ]
    assert [m["To"] for m in notices] == ["alice@example.com"]
    assert CODE_LINE.findall(text_of(notices[0])) == []


def test_a_second_factor_stays_on_after_a_reset(app, client, mailbox, alice):
    with app.app_context():
        db = get_session()
        db.execute(update(User).values(mfa_enabled=True))
        db.commit()
    code = code_of(reset_mail(app, client, mailbox))
    assert reset(client, email="alice@example.com", code=code).status_code == 204
    with app.app_context():
        assert get_session().scalar(select(User.mfa_enabled)) is True


@pytest.mark.parametrize(
    "body",
    [
        {"email": "nobody@example.com", "code": "123456"},
        {"email": "alice@example.com", "code": "12345"},
        {"email": "alice@example.com", "code": "abcdef"},
        {"email": "alice@example.com", "code": ""},
        {"token": "no-such-token"},
        {"token": "A" * 43},
    ],
)
def test_unknown_codes_and_tokens_are_refused_alike(client, alice, body):
    problem(reset(client, **body), "invalid_code", 400)


def test_a_disabled_account_gets_no_message(app, client, mailbox, alice):
    with app.app_context():
        db = get_session()
        db.execute(update(User).values(is_active=False))
        db.commit()
    assert forgot(client).status_code == 202
    assert deliver(app) == 0
    assert mailbox.messages == []


def test_a_code_of_an_account_disabled_since_is_refused(app, client, mailbox, alice):
    code = code_of(reset_mail(app, client, mailbox))
    with app.app_context():
        db = get_session()
        db.execute(update(User).values(is_active=False))
        db.commit()
    problem(reset(client, email="alice@example.com", code=code), "invalid_code", 400)


def test_an_unknown_address_gets_no_message(app, client, mailbox, alice):
    assert forgot(client, "nobody@example.com").status_code == 202
    assert deliver(app) == 0
    assert mailbox.messages == []
    with app.app_context():  # pruned: nothing of it is kept
        assert get_session().scalars(select(OutboxMessage)).all() == []


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"email": "is required"}),
        ({"email": 5}, {"email": "must be a string"}),
        ({"email": "not an address"}, {"email": "must be a valid e-mail address"}),
        ({"email": "a@b.example", "x": 1}, {"x": "is not a known field"}),
        ({"email": "a" * 255}, {"email": "must be at most 254 characters"}),
    ],
)
def test_forgot_refuses_bad_bodies(client, body, errors):
    problem(
        client.post("/password/forgot", json=body),
        "validation_error",
        400,
        errors=errors,
    )


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {},
            {
                "new_password": "is required",
                "email": "is required",
                "code": "is required",
            },
        ),
        ({"new_password": NEW_PASSWORD, "code": "123456"}, {"email": "is required"}),
        (
            {"new_password": NEW_PASSWORD, "token": "t", "code": "123456"},
            {"code": "must not be given with token"},
        ),
        ({"new_password": NEW_PASSWORD, "token": 5}, {"token": "must be a string"}),
        (
            {"new_password": NEW_PASSWORD, "token": ""},
            {"token": "must be at least 1 characters"},
        ),
        (
            {"new_password": "short", "token": "t"},
            {"new_password": "must be at least 8 characters"},
        ),
        (
            {"new_password": NEW_PASSWORD, "email": "bad", "code": "123456"},
            {"email": "must be a valid e-mail address"},
        ),
    ],
)
def test_reset_refuses_bad_bodies(client, body, errors):
    problem(
        client.post("/password/reset", json=body),
        "validation_error",
        400,
        errors=errors,
    )


@pytest.mark.parametrize("path", ["/password/forgot", "/password/reset"])
def test_recovery_endpoints_refuse_other_media_types(client, path):
    problem(client.post(path, data="email=a@b.example"), "unsupported_media_type", 415)


@pytest.mark.parametrize("path", ["/password/forgot", "/password/reset"])
def test_nothing_is_spent_by_a_get(client, path):
    response = client.get(path)
    problem(response, "method_not_allowed", 405)
    assert response.headers["Allow"] == "OPTIONS, POST"


# --- limits ---------------------------------------------------------------------


def test_the_per_address_limit_answers_alike_and_sends_nothing_more(
    make_app, mailbox, alice
):
    app = make_app(MAIL_RATE_LIMIT="2 per hour")
    client = app.test_client()
    answers = [forgot(client, address=f"192.0.2.{n}") for n in range(1, 5)]

    assert [a.status_code for a in answers] == [202] * 4
    assert {a.data for a in answers} == {answers[0].data}
    assert deliver(app) == 2
    assert len(mailbox.messages) == 2


def test_the_per_address_limit_counts_unknown_addresses_too(make_app, mailbox):
    app = make_app(MAIL_RATE_LIMIT="1 per hour")
    client = app.test_client()
    assert forgot(client, "nobody@example.com").status_code == 202
    client.post(
        "/users",
        json={"username": "late", "password": PASSWORD, "email": "nobody@example.com"},
    )
    # Held back: the registration's verification message, and a second reset.
    assert forgot(client, "nobody@example.com").status_code == 202
    deliver(app)
    # The first request's message goes to the account the address has by now.
    assert [m["Subject"] for m in mailbox.messages] == ["Your password reset code"]


def test_the_client_limit_answers_429(make_app, alice):
    app = make_app(MAIL_CLIENT_RATE_LIMIT="2 per hour")
    client = app.test_client()
    assert forgot(client, "a@example.com").status_code == 202
    assert forgot(client, "b@example.com").status_code == 202

    response = forgot(client, "c@example.com")

    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert forgot(client, "c@example.com", address="192.0.2.99").status_code == 202


# --- enumeration ----------------------------------------------------------------


@pytest.fixture
def statements(app, monkeypatch):
    """The SQL of every statement the app runs, driver and ORM alike, in order."""
    seen: list[str] = []
    database = app.extensions["authsvc.db"]

    def record(method):
        def run(self, *args, **kwargs):
            seen.append(self.sql)
            return method(self, *args, **kwargs)

        return run

    monkeypatch.setattr(DriverStatement, "_execute", record(DriverStatement._execute))
    monkeypatch.setattr(DriverStatement, "run_many", record(DriverStatement.run_many))

    def orm(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", orm)
    yield seen
    event.remove(database.engine, "before_cursor_execute", orm)


@pytest.fixture
def accounts(app, register, mailbox):
    register("alice", email="alice@example.com")
    register("dora", email="dora@example.com")
    with app.app_context():
        db = get_session()
        db.execute(update(User).where(User.username == "dora").values(is_active=False))
        db.commit()
    deliver(app)
    mailbox.messages.clear()


COMPARED_HEADERS = {"Content-Type", "Content-Length", "Cache-Control", "Retry-After"}


def comparable(response) -> tuple:
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in {"X-Request-ID", "Date"}
    }
    return response.status_code, response.data, headers


@pytest.mark.parametrize(
    "email", ["alice@example.com", "ALICE@example.com", "dora@example.com"]
)
def test_known_unknown_and_disabled_addresses_are_indistinguishable(
    client, accounts, statements, email
):
    def run(address: str, remote: str):
        statements.clear()
        response = forgot(client, address, remote)
        assert response.status_code == 202
        return comparable(response), list(statements)

    unknown = run("nobody@example.com", "192.0.2.1")
    assert unknown[1]
    assert run(email, "192.0.2.2") == unknown


def test_the_sender_alone_tells_addresses_apart(app, client, mailbox, accounts):
    for email in ("alice@example.com", "dora@example.com", "nobody@example.com"):
        assert forgot(client, email).status_code == 202
    assert deliver(app) == 1
    assert [m["To"] for m in mailbox.messages] == ["alice@example.com"]


# --- races, outages, restarts -----------------------------------------------------


def test_concurrent_resets_with_one_code_let_exactly_one_win(
    app, client, mailbox, alice
):
    code = code_of(reset_mail(app, client, mailbox))
    barrier = threading.Barrier(4)
    answers: list[int] = []

    def attempt(n: int) -> None:
        own = app.test_client()
        barrier.wait()
        response = own.post(
            "/password/reset",
            json={
                "email": "alice@example.com",
                "code": code,
                "new_password": f"{NEW_PASSWORD} {n}",
            },
        )
        answers.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answers) == [204, 400, 400, 400]


def test_an_smtp_outage_delays_the_message_but_loses_nothing(
    app, client, clock, mailbox, alice
):
    mailbox.stop()
    assert forgot(client).status_code == 202
    assert deliver(app) == 0
    clock.advance(5)
    assert deliver(app) == 0

    mailbox.start()
    assert deliver(app) == 0  # not due yet: the second try waits 10 s
    clock.advance(10)
    assert deliver(app) == 1
    (message,) = mailbox.messages
    assert reset(client, token=token_of(message)).status_code == 204


def test_a_message_is_given_up_after_half_an_hour_with_an_error(
    app, client, clock, mailbox, alice, caplog
):
    mailbox.stop()
    assert forgot(client).status_code == 202
    for _ in range(40):
        deliver(app)
        clock.advance(60)
    assert deliver(app) == 0
    with app.app_context():
        assert get_session().scalars(select(OutboxMessage)).all() == []
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1
    assert failures[0].getMessage().startswith("gave up on a reset message after")
    assert "alice" not in failures[0].getMessage()
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'authsvc_mail_messages_total{outcome="failed"} 1.0' in metrics


def test_retries_go_on_for_at_least_ten_minutes(app, client, clock, mailbox, alice):
    mailbox.stop()
    assert forgot(client).status_code == 202
    for _ in range(11):
        deliver(app)
        clock.advance(60)
    mailbox.start()
    clock.advance(60)
    assert deliver(app) == 1


def test_a_message_queued_before_a_restart_is_sent_after_it(
    app, client, make_app, mailbox, alice
):
    assert forgot(client).status_code == 202
    app.extensions["authsvc.db"].dispose()

    restarted = make_app()

    assert deliver(restarted) == 1
    assert mailbox.messages[0]["To"] == "alice@example.com"


def test_a_claimed_message_is_left_alone_by_other_senders(
    app, client, make_app, clock, mailbox, alice
):
    assert forgot(client).status_code == 202
    with app.app_context():
        (claimed,) = claim(10)
    other = make_app()
    assert deliver(other) == 0  # held by the first sender's claim
    clock.advance(121)  # the first sender died: its claim runs out
    assert deliver(other) == 1
    assert claimed.attempts == 1


def test_nothing_of_a_code_or_token_is_stored_in_plain_text(
    app, client, mailbox, alice
):
    message = reset_mail(app, client, mailbox)
    secrets = (code_of(message), token_of(message))
    with app.app_context():
        connection = get_session().connection()
        for table in Base.metadata.sorted_tables:
            dump = repr(connection.execute(select(table)).all())
            for secret in secrets:
                assert secret not in dump, table.name


def test_racing_senders_never_claim_one_message_twice(app, client, make_app):
    for n in range(40):
        assert (
            forgot(client, f"nobody{n}@example.com", f"192.0.2.{n}").status_code == 202
        )
    senders = [app, make_app(), make_app()]
    barrier = threading.Barrier(len(senders))
    claimed: list[list[int]] = [[] for _ in senders]

    def drain(index: int) -> None:
        sender = senders[index]
        barrier.wait()
        while True:
            with sender.app_context():
                batch = claim(3)
            if not batch:
                return
            claimed[index].extend(message.id for message in batch)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(len(senders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    every = [message_id for ids in claimed for message_id in ids]
    assert len(every) == 40
    assert len(set(every)) == 40


def test_notices_count_but_are_never_held_back(make_app, mailbox):
    app = make_app(MAIL_RATE_LIMIT="1 per hour")
    client = app.test_client()
    client.post(
        "/users",
        json={"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
    )
    tokens = sign_in(client, "alice")
    # The verification message used the address's one message of the hour.
    assert forgot(client).status_code == 202
    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    deliver(app)
    assert [m["Subject"] for m in mailbox.messages] == [
        "Confirm your e-mail address",
        "Your password was changed",
    ]
