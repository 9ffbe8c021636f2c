"""The sender: claims queued messages, makes their codes, sends them, retries.

One pass (:func:`send_pending`) claims due rows of the outbox, and for each
finds the account it concerns (a reset names only an address: the account is
resolved here, never in the request), makes the code and link token when the
message carries one (only their keyed hashes are stored, replacing older ones),
renders and sends it. A message that cannot be sent is tried again with a
growing delay, for :data:`RETRY_FOR`; after that it is given up, with an error
in the log and the ``authsvc_mail_messages{outcome="failed"}`` metric. A try
that failed after its code was stored makes a fresh code next time, which
replaces it.

Passes run in a thread of each serving worker (:func:`start_in_process`), or
in ``authsvc mail send`` / ``authsvc mail worker``; claims keep them apart.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import audit, clock, codes
from .codes import Purpose
from .db import get_session
from .mail import Backend, MailError, Message, link_block, make_backend, render
from .models import User
from .outbox import Claimed, MessageKind, claim, finish, retry_at
from .users import canonical

log = logging.getLogger("authsvc.mail")

#: How long a message is tried before it is given up.
RETRY_FOR = timedelta(minutes=30)
#: The first retry's delay; each further one doubles, up to :data:`MAX_DELAY`.
FIRST_DELAY = timedelta(seconds=5)
MAX_DELAY = timedelta(seconds=60)
#: Rows one pass claims at most.
BATCH = 20
#: Seconds between passes of a sender thread.
POLL_SECONDS = 2.0
#: Where the app keeps its mail backend.
BACKEND = "authsvc.mail"

#: Which code each kind of message carries, and the client app's page for its link.
CODED: dict[MessageKind, tuple[Purpose, str, str]] = {
    MessageKind.RESET: (Purpose.RESET, "reset-password", "PASSWORD_RESET_TTL"),
    MessageKind.VERIFY: (Purpose.VERIFY, "verify-email", "EMAIL_VERIFY_TTL"),
    MessageKind.CHANGE: (Purpose.CHANGE, "verify-email", "EMAIL_VERIFY_TTL"),
}


def init_app(app: Flask) -> None:
    """Build the app's mail backend from its settings."""
    app.extensions[BACKEND] = make_backend(app.config)


def _backend() -> Backend:
    backend: Backend = current_app.extensions[BACKEND]
    return backend


def send_pending(limit: int = BATCH) -> int:
    """Claim due messages and try each once; how many were sent."""
    sent = 0
    for message in claim(limit):
        sent += _deliver(message)
    return sent


def _deliver(claimed: Claimed) -> bool:
    try:
        message = _compose(claimed)
    except SQLAlchemyError as exc:
        # The database failed: the claim runs out and a later pass tries again.
        get_session().rollback()
        log.warning(
            "could not prepare a %s message: %s", claimed.kind, type(exc).__name__
        )
        return False
    except (OSError, ValueError) as exc:
        # An operator's template that cannot be read: retried, then given up.
        log.exception("could not render a %s message", claimed.kind)
        _failed(claimed, MailError(f"could not render it: {type(exc).__name__}"))
        return False
    if message is None:
        finish(claimed.id)  # nobody to send it to: the request was answered alike
        return False
    try:
        _backend().send(message, current_app.config["MAIL_FROM"])
    except MailError as exc:
        _failed(claimed, exc)
        return False
    finish(claimed.id)
    audit.record("mail_sent", kind=str(claimed.kind))
    return True


def _failed(claimed: Claimed, error: MailError) -> None:
    now = clock.now()
    if now - claimed.created_at >= RETRY_FOR:
        finish(claimed.id)
        log.error(
            "gave up on a %s message after %d tries over %s: %s",
            claimed.kind,
            claimed.attempts,
            RETRY_FOR,
            error,
        )
        audit.record("mail_failed", kind=str(claimed.kind))
        return
    delay = min(FIRST_DELAY * 2 ** (claimed.attempts - 1), MAX_DELAY)
    log.warning(
        "could not send a %s message (try %d), trying again in %ds: %s",
        claimed.kind,
        claimed.attempts,
        delay.total_seconds(),
        error,
    )
    retry_at(claimed.id, now + delay)


def _compose(claimed: Claimed) -> Message | None:
    """The message to send, with a fresh code where it carries one; or ``None``."""
    user = _recipient(claimed)
    if user is None:
        return None
    values = {
        "username": user.username,
        "service": current_app.config["ISSUER"],
        "link_block": "",
    }
    to = claimed.address
    coded = CODED.get(claimed.kind)
    if coded is not None:
        purpose, page, ttl_setting = coded
        ttl = current_app.config[ttl_setting]
        if claimed.kind is MessageKind.RESET:
            to = user.email or to
        issued = codes.issue(user.id, purpose, to, ttl)
        base = current_app.config["LINK_BASE_URL"]
        values.update(
            code=issued.code,
            link_block=link_block(base, page, issued.token),
            lifetime=lifetime(ttl),
        )
    return render(str(claimed.kind), to, values, current_app.config["MAIL_TEMPLATES"])


def lifetime(seconds: int) -> str:
    """A code's lifetime as a reader says it: "60 minutes", "24 hours"."""
    if seconds >= 7200 and seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    if seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _recipient(claimed: Claimed) -> User | None:
    """The account a message is for, if it should still be sent."""
    db = get_session()
    if claimed.kind is MessageKind.RESET:
        user = db.scalar(
            select(User).where(User.email_key == canonical(claimed.address))
        )
        return user if user is not None and user.is_active else None
    found = db.get(User, claimed.user_id) if claimed.user_id else None
    if found is None:
        return None
    if claimed.kind is MessageKind.VERIFY:
        # Only for the address the account still has, and not yet verified.
        still = found.email_key == canonical(claimed.address)
        return found if still and found.is_active and not found.email_verified else None
    if claimed.kind is MessageKind.CHANGE:
        return found if found.is_active else None
    return found


class SenderThread(threading.Thread):
    """Passes of the sender in the background of one serving worker."""

    def __init__(self, app: Flask, interval: float = POLL_SECONDS) -> None:
        super().__init__(name="authsvc-mail-sender", daemon=True)
        self.app = app
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        """Run a pass, wait, and again, until stopped."""
        while not self.stopping.is_set():
            run_pass(self.app)
            self.stopping.wait(self.interval)

    def stop(self, timeout: float = 15.0) -> None:
        """Let the current pass end, then stop."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)


def run_pass(app: Flask) -> int:
    """One pass in an app context of its own; a failure is logged, never raised."""
    with app.app_context():
        try:
            return send_pending()
        except SQLAlchemyError as exc:
            get_session().rollback()
            log.warning("mail sender: database unavailable: %s", type(exc).__name__)
        except Exception:
            log.exception("mail sender pass failed")
        return 0


_threads: list[SenderThread] = []


def start_in_process(app: Flask) -> SenderThread:
    """Start the sender thread of this process (a serving worker)."""
    thread = SenderThread(app)
    thread.start()
    _threads.append(thread)
    return thread


def stop_in_process() -> None:
    """Stop this process's sender threads, letting a pass in progress end."""
    while _threads:
        _threads.pop().stop()
