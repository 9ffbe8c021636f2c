"""One-time codes and link tokens: made at send time, kept as keyed hashes, spent once.

Each user has at most one outstanding code of each purpose (a password reset, an
e-mail verification, an e-mail change): a newer one replaces it. A message
carries a six-digit code and a link token; either spends the row, once, by one
conditional UPDATE, so two racing requests cannot both win. Five wrong codes
burn the row, so that even the right one then fails. Only HMACs under a key
derived from the service secret are stored.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from . import clock
from .db import get_db, get_session, rowcount
from .errors import Code, Problem
from .keys import get_keys
from .models import OneTimeCode
from .tokens import derive_key, hash_opaque_token, new_opaque_token

#: Wrong codes after which a row is burnt.
MAX_ATTEMPTS = 5
CODE_DIGITS = 6
#: Where the app keeps the key of the codes' HMACs.
CODES_KEY = "authsvc.codes_key"


class Purpose(StrEnum):
    """What a code is for: each purpose has its own codes."""

    RESET = "reset"
    VERIFY = "verify"
    CHANGE = "change"


@dataclass(frozen=True)
class Issued:
    """A new code and link token, to be written into one message and forgotten."""

    code: str
    token: str


def _key() -> bytes:
    key: bytes | None = current_app.extensions.get(CODES_KEY)
    if key is None:
        if not current_app.config.get("SECRET_KEY"):
            get_keys()  # resolves the secret, generating it on first use
        key = derive_key(current_app.config["SECRET_KEY"], "one-time-codes")
        current_app.extensions[CODES_KEY] = key
    return key


def keyed(value: str) -> str:
    """An HMAC of ``value`` under the codes' key: what counters of addresses name."""
    return hash_opaque_token(f"address:{value}", _key())


def _code_hash(user_id: uuid.UUID, purpose: str, code: str) -> str:
    # Bound to its user and purpose: six digits repeat across users.
    return hash_opaque_token(f"code:{purpose}:{user_id}:{code}", _key())


def _token_hash(token: str) -> str:
    return hash_opaque_token(f"token:{token}", _key())


def issue(user_id: uuid.UUID, purpose: Purpose, email: str, ttl: int) -> Issued:
    """Make a code and token for ``user_id``, replacing any outstanding one.

    Committed at once: the message that carries them is sent next.
    """
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    token = new_opaque_token()
    now = clock.now()
    values = {
        "code_hash": _code_hash(user_id, purpose, code),
        "token_hash": _token_hash(token),
        "email": email,
        "attempts": 0,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl),
        "used_at": None,
    }
    dialect = postgresql if get_db().postgres else sqlite
    statement = dialect.insert(OneTimeCode).values(
        user_id=user_id, purpose=str(purpose), **values
    )
    db = get_session()
    db.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id", "purpose"], set_=values
        )
    )
    db.commit()
    return Issued(code, token)


def by_code(user_id: uuid.UUID | None, purpose: Purpose, code: str) -> OneTimeCode:
    """The live row ``code`` matches for this user, or ``invalid_code``.

    A wrong code counts against the row (committed at once); the fifth burns it.
    """
    row = None
    if user_id is not None:
        row = get_session().scalar(
            select(OneTimeCode).where(
                OneTimeCode.user_id == user_id, OneTimeCode.purpose == str(purpose)
            )
        )
    if row is None or not _live(row, clock.now()):
        raise Problem(Code.INVALID_CODE)
    if not hmac.compare_digest(row.code_hash, _code_hash(row.user_id, purpose, code)):
        db = get_session()
        db.execute(
            update(OneTimeCode)
            .where(
                OneTimeCode.id == row.id,
                OneTimeCode.used_at.is_(None),
                OneTimeCode.attempts < MAX_ATTEMPTS,
            )
            .values(attempts=OneTimeCode.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        db.commit()
        raise Problem(Code.INVALID_CODE)
    return row


def by_token(token: str, purposes: Collection[Purpose]) -> OneTimeCode:
    """The live row of one of ``purposes`` that ``token`` names, or ``invalid_code``."""
    row = get_session().scalar(
        select(OneTimeCode).where(
            OneTimeCode.token_hash == _token_hash(token),
            OneTimeCode.purpose.in_([str(purpose) for purpose in purposes]),
        )
    )
    if row is None or not _live(row, clock.now()):
        raise Problem(Code.INVALID_CODE)
    return row


def _live(row: OneTimeCode, now: datetime) -> bool:
    return row.used_at is None and row.attempts < MAX_ATTEMPTS and row.expires_at > now


def spend(row: OneTimeCode) -> None:
    """Mark ``row`` used, in the caller's transaction; ``invalid_code`` if it is not.

    One conditional UPDATE: of requests racing with one code, exactly one wins.
    The caller commits, with the change the code pays for.
    """
    spent = get_session().execute(
        update(OneTimeCode)
        .where(
            OneTimeCode.id == row.id,
            OneTimeCode.code_hash == row.code_hash,
            OneTimeCode.used_at.is_(None),
            OneTimeCode.attempts < MAX_ATTEMPTS,
            OneTimeCode.expires_at > clock.now(),
        )
        .values(used_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    if rowcount(spent) != 1:
        get_session().rollback()
        raise Problem(Code.INVALID_CODE)
