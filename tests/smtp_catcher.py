"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1 and a free port.

:class:`Mailbox` keeps every message it receives, parsed, and can be stopped
(an outage) and started again on the same port. With a certificate it offers
STARTTLS and requires it, and with credentials it requires them too.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.process import free_port

CODE_LINE = re.compile(r"^(\d{6})$", re.MULTILINE)
TOKEN_IN_LINK = re.compile(r"\?token=([A-Za-z0-9_-]+)$", re.MULTILINE)


class _Keeper:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, _server, _session, envelope) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.box.arrived:
            self.box.messages.append(message)
            self.box.arrived.notify_all()
        return "250 Message accepted"


class Mailbox:
    """An SMTP server the test starts and stops; ``messages`` is what it received."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.tls = tls
        self.login = login
        self.messages: list[EmailMessage] = []
        self.arrived = threading.Condition()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        credentials = f"{self.login[0]}:{self.login[1]}@" if self.login else ""
        query = "?starttls=1" if self.tls else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}{query}"

    def start(self) -> None:
        extra = {}
        if self.tls is not None:
            extra.update(tls_context=self.tls, require_starttls=True)
        if self.login is not None:
            extra.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(
            _Keeper(self), hostname="127.0.0.1", port=self.port, **extra
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def _authenticate(self, _server, _session, _envelope, _mechanism, data):
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.login
        )
        return AuthResult(success=ok)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[EmailMessage]:
        """Wait in real time (a live server sends on its own) for ``count`` messages."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.messages)} messages arrived, not {count}"
                    )
                self.arrived.wait(left)
            return list(self.messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


def text_of(message: EmailMessage) -> str:
    """The body as a reader sees it: lines end in a newline, not CRLF."""
    return message.get_content().replace("\r\n", "\n")


def code_of(message: EmailMessage) -> str:
    (code,) = CODE_LINE.findall(text_of(message))
    return code


def token_of(message: EmailMessage) -> str:
    (token,) = TOKEN_IN_LINK.findall(text_of(message))
    return token


def throwaway_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "smtp-cert.pem"
    key_path = folder / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
