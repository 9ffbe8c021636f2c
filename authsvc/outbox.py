"""The outbox: messages queued in the request's transaction, claimed by senders.

A request adds a row (its kind, its recipient, the account when it knows it) to
its own ORM session, so the message is queued exactly when the request's change
is committed, and answers before anything is sent. Senders, in every serving
worker and in ``authsvc mail worker`` alike, claim due rows with one UPDATE
that moves them out of everyone else's reach for a while (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite's one write lock makes claims take turns), so no
row is sent twice at once and a sender that dies mid-send leaves its rows to the
next one. Rows are deleted once sent or given up: the table holds only mail on
its way. The recipient's address is kept as given until then; no code ever is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, update

from . import clock
from .codes import keyed
from .db import get_session
from .errors import RateLimited
from .models import OutboxMessage
from .throttle import Kind, get_throttle
from .users import canonical

#: How long a claim keeps a row from other senders: well past one send's timeout.
CLAIM_FOR = timedelta(seconds=120)


class MessageKind(StrEnum):
    """What a queued message is; the sender makes its text (``mail`` templates)."""

    #: A reset code, if an active account has the address (the sender resolves it).
    RESET = "reset"
    VERIFY = "verify"
    CHANGE = "change"
    #: Notices, without a code, to the account's address.
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a kind, not a secret)
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    EMAIL_CHANGE = "email_change"


def count_address(address: str) -> bool:
    """Count one message to ``address`` against its limit; whether it is within it.

    The counter is named by an HMAC of the canonical address, so it is the same
    whether or not an account has the address, and names nobody.
    """
    try:
        get_throttle().attempt(Kind.MAIL, keyed(canonical(address)))
    except RateLimited:
        return False
    return True


def queue(kind: MessageKind, address: str, user_id: uuid.UUID | None = None) -> bool:
    """Queue a message in the request's session if ``address``'s limit allows it.

    The caller commits. Past the limit nothing is queued, and the caller answers
    as if it were: that tells nothing the caller did not already know.
    """
    if not count_address(address):
        return False
    add(kind, address, user_id)
    return True


def notify(kind: MessageKind, address: str, user_id: uuid.UUID) -> None:
    """Queue a notice to the account's address; it counts, but is never held back.

    The owner must learn of a change to their account, however many messages
    someone else had the address sent.
    """
    count_address(address)
    add(kind, address, user_id)


def add(kind: MessageKind, address: str, user_id: uuid.UUID | None) -> None:
    """Queue a message already counted (:func:`count_address`) in the session.

    For a caller inside a write transaction: on SQLite the counters, on another
    connection, could not be written until it ends.
    """
    now = clock.now()
    get_session().add(
        OutboxMessage(
            kind=str(kind),
            address=address,
            user_id=user_id,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )


@dataclass(frozen=True)
class Claimed:
    """A row a sender holds until :data:`CLAIM_FOR` has passed."""

    id: int
    kind: MessageKind
    address: str
    user_id: uuid.UUID | None
    created_at: datetime
    #: Tries so far, this one included.
    attempts: int


def claim(limit: int) -> list[Claimed]:
    """Take up to ``limit`` due rows for this sender, oldest first; committed.

    A plain read first: most passes find nothing due, and then take no write lock
    (on SQLite, the one every login and refresh also needs).
    """
    now = clock.now()
    db = get_session()
    anything = db.scalar(
        select(OutboxMessage.id).where(OutboxMessage.next_attempt_at <= now).limit(1)
    )
    db.rollback()
    if anything is None:
        return []
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + CLAIM_FOR, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.kind,
            OutboxMessage.address,
            OutboxMessage.user_id,
            OutboxMessage.created_at,
            OutboxMessage.attempts,
        )
        .execution_options(synchronize_session=False)
    ).all()
    db.commit()
    claimed = [Claimed(row.id, MessageKind(row.kind), *row[2:]) for row in rows]
    return sorted(claimed, key=lambda message: message.id)


def finish(message_id: int) -> None:
    """Delete a row that was sent, or given up on, or has no one to go to."""
    db = get_session()
    db.execute(delete(OutboxMessage).where(OutboxMessage.id == message_id))
    db.commit()


def retry_at(message_id: int, when: datetime) -> None:
    """Hand a row back, due again at ``when``."""
    db = get_session()
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(next_attempt_at=when)
        .execution_options(synchronize_session=False)
    )
    db.commit()


def pending() -> int:
    """How many messages wait in the outbox, due or not."""
    count = get_session().scalar(select(func.count()).select_from(OutboxMessage))
    return int(count or 0)
