"""Mail: the messages the service sends, their templates, and the backends that send.

A message is plain text (UTF-8) to one address, rendered from a template whose
first line is ``Subject: ...``. The built-in templates live beside this module;
``AUTHSVC_MAIL_TEMPLATES`` names a folder whose ``<kind>.txt`` files replace
them. A backend sends one message or raises :class:`MailError`: ``console``
writes it to the log (development), ``smtp`` hands it to a server with the
standard library's smtplib. Another backend (an HTTP webhook) is one more class
with a ``send`` method.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("authsvc.mail")

#: Seconds an SMTP connection, and each of its commands, may take.
SMTP_TIMEOUT = 10
#: What each kind of message is rendered from (``<kind>.txt``).
KINDS = (
    "reset",
    "verify",
    "change",
    "password_reset",
    "password_changed",
    "email_change",
)


class MailError(Exception):
    """A message could not be sent this time; the reason names no secret."""


@dataclass(frozen=True)
class Message:
    """One plain-text e-mail to one address."""

    to: str
    subject: str
    body: str


def render(
    kind: str, to: str, values: Mapping[str, str], folder: str | None = None
) -> Message:
    """The message of ``kind`` to ``to``, from the operator's template if any."""
    text = _template(kind, folder)
    first, _, body = Template(text).safe_substitute(values).partition("\n")
    subject = first.removeprefix("Subject:").strip()
    return Message(to=to, subject=subject, body=body.lstrip("\n"))


def _template(kind: str, folder: str | None) -> str:
    if kind not in KINDS:
        raise ValueError(f"no such message: {kind}")
    if folder:
        own = Path(folder) / f"{kind}.txt"
        if own.is_file():
            return own.read_text(encoding="utf-8")
    return (
        resources.files("authsvc")
        .joinpath("mail_templates", f"{kind}.txt")
        .read_text(encoding="utf-8")
    )


def link_block(base: str | None, page: str, token: str) -> str:
    """The lines that offer a link to the client app's ``page``, or nothing."""
    if not base:
        return ""
    return f"\nOr open this link:\n{base}/{page}?token={token}\n"


def to_email(message: Message, sender: str) -> EmailMessage:
    """``message`` as an RFC 5322 e-mail from ``sender``: text/plain, UTF-8."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    email.set_content(message.body, charset="utf-8")
    return email


class Backend(Protocol):
    """Sends one message, or raises :class:`MailError`."""

    def send(self, message: Message, sender: str) -> None:
        """Deliver ``message`` from ``sender``."""


class ConsoleBackend:
    """Development: each message goes to the log, and nothing is sent."""

    def send(self, message: Message, sender: str) -> None:
        """Write the whole message to the log, then say that nothing was sent."""
        log.info(
            "mail to %s from %s\nSubject: %s\n\n%s",
            message.to,
            sender,
            message.subject,
            message.body,
        )
        log.warning(
            "console mail backend: nothing was sent to %s; "
            "set AUTHSVC_MAIL_BACKEND=smtp and AUTHSVC_SMTP_URL to send mail",
            message.to,
        )


class SmtpBackend:
    """A mail server, over STARTTLS or implicit TLS, checked against the trust store.

    ``smtp://[user:password@]host:port`` (``?starttls=1`` to upgrade) or
    ``smtps://...``. The certificate is verified against the system's trust
    store (``SSL_CERT_FILE`` honoured).
    """

    def __init__(self, url: str, *, timeout: float = SMTP_TIMEOUT) -> None:
        parsed = urlsplit(url)
        self.implicit_tls = parsed.scheme == "smtps"
        self.host = parsed.hostname or "localhost"
        self.port = parsed.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password or "")
        query = parse_qs(parsed.query)
        self.starttls = query.get("starttls", ["0"])[-1] in {"1", "true", "yes"}
        self.timeout = timeout

    def send(self, message: Message, sender: str) -> None:
        """Hand ``message`` to the server; its refusal or absence is a MailError."""
        email = to_email(message, sender)
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(email)
        except smtplib.SMTPResponseException as exc:
            raise MailError(f"the mail server answered {exc.smtp_code}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"the mail server failed: {type(exc).__name__}") from exc

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                timeout=self.timeout,
                context=ssl.create_default_context(),
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)


def make_backend(config: Mapping[str, Any]) -> Backend:
    """The backend ``AUTHSVC_MAIL_BACKEND`` names."""
    if config["MAIL_BACKEND"] == "smtp":
        return SmtpBackend(config["SMTP_URL"])
    return ConsoleBackend()
