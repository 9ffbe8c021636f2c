"""Mail backends and templates (authsvc.mail), the mail settings, `authsvc mail`."""

from __future__ import annotations

import logging
import ssl

import pytest
from smtp_catcher import CODE_LINE, Mailbox, code_of, text_of, throwaway_certificate

from authsvc import mail_sender, outbox
from authsvc.config import ConfigError, load_config
from authsvc.mail import (
    ConsoleBackend,
    MailError,
    Message,
    SmtpBackend,
    render,
)

MESSAGE = Message(to="alice@example.com", subject="Grüße", body="Hello, wörld.\n")
SECRET = "s" * 40


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    """A throwaway certificate for 127.0.0.1, trusted through SSL_CERT_FILE."""
    cert, key = throwaway_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_smtp_sends_plain_utf8_text():
    box = Mailbox()
    box.start()
    try:
        SmtpBackend(box.url).send(MESSAGE, "Service <authsvc@example.com>")
    finally:
        box.stop()
    (received,) = box.messages
    assert received["From"] == "Service <authsvc@example.com>"
    assert received["To"] == "alice@example.com"
    assert received["Subject"] == "Grüße"
    assert received.get_content_type() == "text/plain"
    assert received.get_content_charset() == "utf-8"
    assert text_of(received) == "Hello, wörld.\n"
    assert received["Message-ID"].endswith("@example.com>")


def test_smtp_upgrades_with_starttls_and_logs_in(certificate):
    box = Mailbox(tls=certificate, login=("mailer", "p@ss word"))
    box.start()
    try:
        url = f"smtp://mailer:p%40ss%20word@127.0.0.1:{box.port}?starttls=1"
        SmtpBackend(url).send(MESSAGE, "authsvc@localhost")
    finally:
        box.stop()
    assert [m["To"] for m in box.messages] == ["alice@example.com"]


def test_smtp_refuses_a_certificate_it_does_not_trust(certificate, monkeypatch):
    box = Mailbox(tls=certificate)
    box.start()
    monkeypatch.delenv("SSL_CERT_FILE")
    try:
        with pytest.raises(MailError, match="SSLCertVerificationError"):
            SmtpBackend(box.url).send(MESSAGE, "authsvc@localhost")
    finally:
        box.stop()
    assert box.messages == []


def test_smtp_with_wrong_credentials_is_a_mail_error(certificate):
    box = Mailbox(tls=certificate, login=("mailer", "right"))
    box.start()
    try:
        url = f"smtp://mailer:wrong@127.0.0.1:{box.port}?starttls=1"
        with pytest.raises(MailError, match=r"^the mail server "):
            SmtpBackend(url).send(MESSAGE, "authsvc@localhost")
    finally:
        box.stop()


def test_an_unreachable_server_is_a_mail_error():
    box = Mailbox()  # never started: its port refuses connections
    with pytest.raises(MailError, match="ConnectionRefusedError"):
        SmtpBackend(box.url, timeout=2).send(MESSAGE, "authsvc@localhost")


def test_the_url_gives_host_port_tls_and_credentials():
    implicit = SmtpBackend("smtps://u%40x:p%3Aw@mail.example.com")
    assert (implicit.host, implicit.port, implicit.implicit_tls) == (
        "mail.example.com",
        465,
        True,
    )
    assert (implicit.username, implicit.password) == ("u@x", "p:w")
    plain = SmtpBackend("smtp://mail.example.com:2525?starttls=1")
    assert (plain.port, plain.starttls, plain.username) == (2525, True, None)


def test_the_console_backend_logs_the_message_and_says_nothing_was_sent(caplog):
    caplog.set_level(logging.INFO, logger="authsvc.mail")
    ConsoleBackend().send(MESSAGE, "authsvc@localhost")
    first, second = (record.getMessage() for record in caplog.records)
    assert first == (
        "mail to alice@example.com from authsvc@localhost\n"
        "Subject: Grüße\n\nHello, wörld.\n"
    )
    assert second.startswith("console mail backend: nothing was sent to alice@")
    assert caplog.records[1].levelname == "WARNING"


def test_templates_carry_the_code_on_a_line_of_its_own():
    values = {
        "username": "alice",
        "code": "012345",
        "lifetime": "60 minutes",
        "link_block": "",
    }
    message = render("reset", "alice@example.com", values)
    assert message.subject == "Your password reset code"
    assert CODE_LINE.findall(message.body) == ["012345"]
    assert "$" not in message.body
    assert "works once, for 60 minutes." in message.body


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (30, "30 seconds"),
        (60, "1 minute"),
        (3600, "60 minutes"),
        (5400, "90 minutes"),
        (86400, "24 hours"),
    ],
)
def test_lifetimes_are_said_as_a_reader_would(seconds, said):
    assert mail_sender.lifetime(seconds) == said


def test_an_operator_folder_replaces_a_template(tmp_path):
    (tmp_path / "reset.txt").write_text(
        "Subject: Réinitialisation\n\nBonjour $username,\n\n$code\n", encoding="utf-8"
    )
    values = {"username": "alice", "code": "654321", "link_block": ""}
    message = render("reset", "alice@example.com", values, str(tmp_path))
    assert message.subject == "Réinitialisation"
    assert message.body == "Bonjour alice,\n\n654321\n"
    other = render("verify", "alice@example.com", values, str(tmp_path))
    assert other.subject == "Confirm your e-mail address"


def test_the_development_default_writes_codes_to_the_log(app, client, caplog):
    caplog.set_level(logging.INFO, logger="authsvc.mail")
    client.post(
        "/users",
        json={
            "username": "alice",
            "password": "correct horse battery staple",
            "email": "alice@example.com",
        },
    )
    with app.app_context():
        assert mail_sender.send_pending() == 1  # the verification message
    caplog.clear()
    client.post("/password/forgot", json={"email": "alice@example.com"})
    with app.app_context():
        assert mail_sender.send_pending() == 1
    messages = [record.getMessage() for record in caplog.records]
    reset = next(m for m in messages if "Your password reset code" in m)
    assert len(CODE_LINE.findall(reset)) == 1
    assert any("nothing was sent" in m for m in messages)


def test_mail_send_command_sends_what_is_due(app, client, runner):
    client.post("/password/forgot", json={"email": "nobody@example.com"})
    result = runner.invoke(args=["mail", "send"])
    assert result.exit_code == 0, result.output
    assert result.output == "sent 0 messages\n"  # nobody has the address


def test_mail_send_command_reports_what_it_sent(app, runner, register, caplog):
    register("alice", email="alice@example.com")
    result = runner.invoke(args=["mail", "send"])
    assert result.output == "sent 1 message\n"


# --- settings ---------------------------------------------------------------------

PRODUCTION = {
    "ENV": "production",
    "SECRET_KEY": SECRET,
    "DATABASE_URL": "postgresql+psycopg://db.example.com/authsvc",
}


def test_mail_defaults():
    config = load_config(environ={})
    assert config["MAIL_BACKEND"] == "console"
    assert config["SMTP_URL"] is None
    assert config["MAIL_FROM"] == "authsvc@localhost"
    assert config["LINK_BASE_URL"] is None
    assert config["PASSWORD_RESET_TTL"] == 3600
    assert config["EMAIL_VERIFY_TTL"] == 86400
    assert config["REQUIRE_VERIFIED_EMAIL"] is False
    assert config["MAIL_RATE_LIMIT"] == "3 per hour"
    assert config["MAIL_CLIENT_RATE_LIMIT"] == "30 per hour"
    assert config["MAIL_TEMPLATES"] is None


def test_production_sends_through_smtp():
    config = load_config(PRODUCTION, {"AUTHSVC_SMTP_URL": "smtps://mail.example.com"})
    assert config["MAIL_BACKEND"] == "smtp"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {},
            "AUTHSVC_SMTP_URL must be set to send mail "
            "(AUTHSVC_MAIL_BACKEND=smtp, the default in production)",
        ),
        (
            {"MAIL_BACKEND": "console"},
            "AUTHSVC_MAIL_BACKEND=console writes codes to the log: development only",
        ),
    ],
)
def test_production_refuses_to_start_without_a_way_to_send(changes, message):
    with pytest.raises(ConfigError) as refused:
        load_config({**PRODUCTION, **changes}, environ={})
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_SMTP_URL", "http://mail.example.com"),
        ("AUTHSVC_SMTP_URL", "smtp://"),
        ("AUTHSVC_SMTP_URL", "smtp://mail.example.com:port"),
        ("AUTHSVC_MAIL_BACKEND", "webhook"),
        ("AUTHSVC_LINK_BASE_URL", "app.example.com"),
        ("AUTHSVC_LINK_BASE_URL", "https://app.example.com/?x=1"),
        ("AUTHSVC_PASSWORD_RESET_TTL", "0"),
        ("AUTHSVC_EMAIL_VERIFY_TTL", "soon"),
        ("AUTHSVC_REQUIRE_VERIFIED_EMAIL", "maybe"),
        ("AUTHSVC_MAIL_RATE_LIMIT", "lots"),
        ("AUTHSVC_MAIL_CLIENT_RATE_LIMIT", "0 per hour"),
    ],
)
def test_bad_mail_settings_are_refused_by_name(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable} "):
        load_config(environ={variable: value})


def test_the_link_base_loses_a_trailing_slash():
    config = load_config(environ={"AUTHSVC_LINK_BASE_URL": "https://app.example.com/"})
    assert config["LINK_BASE_URL"] == "https://app.example.com"


def test_a_code_from_the_smtp_pipeline_is_six_digits():
    box = Mailbox()
    box.start()
    try:
        body = "Enter it:\n\n042042\n"
        SmtpBackend(box.url).send(Message("a@example.com", "s", body), "x@example.com")
    finally:
        box.stop()
    assert code_of(box.messages[0]) == "042042"


def test_an_unreadable_operator_template_is_retried_not_crashed(
    make_app, tmp_path, caplog
):
    (tmp_path / "reset.txt").write_bytes(b"Subject: \xff\xfe broken\n")
    app = make_app(MAIL_TEMPLATES=str(tmp_path))
    client = app.test_client()
    client.post(
        "/users",
        json={
            "username": "alice",
            "password": "correct horse battery staple",
            "email": "alice@example.com",
        },
    )
    with app.app_context():
        assert mail_sender.send_pending() == 1  # verify.txt is the built-in one
    client.post("/password/forgot", json={"email": "alice@example.com"})
    with app.app_context():
        assert mail_sender.send_pending() == 0
        assert outbox.pending() == 1
    assert "could not render a reset message" in caplog.text
    assert "trying again in 5s: could not render it: UnicodeDecodeError" in caplog.text
