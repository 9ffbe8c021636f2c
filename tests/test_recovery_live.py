"""The mail pipeline in a real server: ``authsvc serve --workers 2`` and aiosmtpd.

Each serving worker sends queued mail from a thread of its own: a message
arrives within seconds, exactly once, survives an outage of the mail server and
a restart of the service.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD
from live import UNTHROTTLED, LiveServer, clean_env, serve_command
from smtp_catcher import Mailbox, code_of, token_of

pytestmark = pytest.mark.live

SECRET = "recovery-live-secret-" + "m" * 40
NEW_PASSWORD = "purple monkey dishwasher 42"
#: Seconds a message may take to arrive: a pass every 2 s, retries after 5 s.
ARRIVAL = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory) -> Iterator[tuple[LiveServer, Mailbox]]:
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} is not in AUTHSVC_TEST_BACKENDS")
    folder = tmp_path_factory.mktemp(f"recovery-{request.param}")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        database, url = create_postgres_database()
    box = Mailbox()
    box.start()
    env = clean_env(
        SECRET_KEY=SECRET,
        DATABASE_URL=url,
        MAIL_BACKEND="smtp",
        SMTP_URL=box.url,
        LINK_BASE_URL="https://app.example.com",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="1024",
        MAIL_RATE_LIMIT="1000 per hour",
        MAIL_CLIENT_RATE_LIMIT="1000 per hour",
        **UNTHROTTLED,
    )
    try:
        with LiveServer(serve_command(workers=2), cwd=folder, env=env) as server:
            yield server, box
        server.assert_clean_output()
    finally:
        box.stop()
        if database is not None:
            drop_postgres_database(database)


def test_messages_arrive_once_and_their_codes_work(site):
    server, box = site
    box.messages.clear()
    reply = server.request(
        "POST",
        "/users",
        {"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
    )
    assert reply.status == 201, reply
    (verification,) = box.wait_for(1, ARRIVAL)
    reply = server.request("POST", "/email/verify", {"token": token_of(verification)})
    assert reply.status == 200, reply
    assert reply.body["email_verified"] is True

    reply = server.request("POST", "/password/forgot", {"email": "alice@example.com"})
    assert (reply.status, reply.body) == (202, {})
    reset = box.wait_for(2, ARRIVAL)[1]
    body = {"email": "alice@example.com", "code": code_of(reset)}
    reply = server.request(
        "POST", "/password/reset", {**body, "new_password": NEW_PASSWORD}
    )
    assert reply.status == 204, reply
    login = {"username": "alice", "password": NEW_PASSWORD}
    assert server.request("POST", "/login", login).status == 200

    box.wait_for(3, ARRIVAL)  # the notice of the reset
    time.sleep(5)  # real time: both workers' senders have passed again since
    assert [m["Subject"] for m in box.messages] == [
        "Confirm your e-mail address",
        "Your password reset code",
        "Your password was reset",
    ]
    server.assert_clean_output()


def test_an_outage_of_the_mail_server_delays_but_loses_nothing(site):
    server, box = site
    box.messages.clear()
    server.request(
        "POST",
        "/users",
        {"username": "bob", "password": PASSWORD, "email": "bob@example.com"},
    )
    box.wait_for(1, ARRIVAL)  # the verification message
    box.messages.clear()
    box.stop()
    reply = server.request("POST", "/password/forgot", {"email": "bob@example.com"})
    assert (reply.status, reply.body) == (202, {})
    time.sleep(3)  # real time: the first try fails
    box.start()
    (message,) = box.wait_for(1, ARRIVAL)
    assert message["To"] == "bob@example.com"
    server.assert_clean_output()


def test_a_message_queued_before_a_restart_is_sent_after_it(site):
    server, box = site
    box.messages.clear()
    server.request(
        "POST",
        "/users",
        {"username": "carol", "password": PASSWORD, "email": "carol@example.com"},
    )
    box.wait_for(1, ARRIVAL)  # the verification message
    box.messages.clear()
    box.stop()
    reply = server.request("POST", "/password/forgot", {"email": "carol@example.com"})
    assert reply.status == 202
    server.stop()
    box.start()
    server.start()
    (message,) = box.wait_for(1, ARRIVAL)
    assert message["To"] == "carol@example.com"
    reply = server.request(
        "POST",
        "/password/reset",
        {"token": token_of(message), "new_password": NEW_PASSWORD},
    )
    assert reply.status == 204, reply
