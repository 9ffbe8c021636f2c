"""The second factor's state: the TOTP secret, its steps, recovery codes, mfa_tokens.

What a code is worth is decided here, each in one conditional UPDATE, so of two
requests racing with one code exactly one wins: a TOTP code spends its step and
every earlier one, a recovery code itself. The TOTP secret is stored sealed
(AES-GCM, :mod:`authsvc.sealing`); recovery codes and mfa_tokens only as keyed
hashes. ``users.mfa_enabled`` changes in the same transaction as the factor.
Nothing here knows about HTTP, nor about passwords: :mod:`authsvc.mfa` asks for
those.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from flask import current_app
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit, clock, otp
from .db import get_session, rowcount
from .errors import Code, MfaRequired, Problem
from .keys import get_keys
from .models import MfaFactor, MfaToken, RecoveryCode, User
from .sealing import SealError, seal, unseal
from .tokens import derive_key, keyed_hash, new_opaque_token

#: Where the app keeps the keys derived for the second factor.
KEYS = "authsvc.second_factor_keys"
#: Wrong codes after which an mfa_token is burnt.
MAX_CODE_ATTEMPTS = 5


@dataclass(frozen=True)
class _Keys:
    #: Seals TOTP secrets.
    sealing: bytes
    #: Keys the hashes of recovery codes and mfa_tokens.
    hashing: bytes


def _keys() -> _Keys:
    keys: _Keys | None = current_app.extensions.get(KEYS)
    if keys is None:
        get_keys()  # resolves the secret, generating it on first use
        secret = current_app.config["SECRET_KEY"]
        keys = _Keys(
            derive_key(secret, "totp-secret-encryption"),
            derive_key(secret, "mfa-code-hash"),
        )
        current_app.extensions[KEYS] = keys
    return keys


def _seal(user_id: uuid.UUID, secret: str) -> bytes:
    return seal(_keys().sealing, secret.encode(), context=user_id.bytes)


def _unseal(user_id: uuid.UUID, sealed: bytes) -> str:
    return unseal(_keys().sealing, sealed, context=user_id.bytes).decode()


def _hash(value: str) -> str:
    return keyed_hash(_keys().hashing, value)


# --- the login challenge ------------------------------------------------------


def challenge(user_id: uuid.UUID) -> NoReturn:
    """Hand out an mfa_token for the user who just gave their right password."""
    token = new_opaque_token()
    now = clock.now()
    ttl = int(current_app.config["MFA_TOKEN_TTL"])
    db = get_session()
    db.add(
        MfaToken(
            user_id=user_id,
            token_hash=_hash(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            attempts=0,
        )
    )
    db.commit()
    audit.record("mfa_challenged", user_id=user_id)
    raise MfaRequired(token, ttl)


@dataclass(frozen=True)
class Challenge:
    """A live mfa_token: whose it is."""

    id: uuid.UUID
    user_id: uuid.UUID


def _token_is_live(now: datetime) -> list[ColumnElement[bool]]:
    return [
        MfaToken.used_at.is_(None),
        MfaToken.attempts < MAX_CODE_ATTEMPTS,
        MfaToken.expires_at > now,
    ]


def live_challenge(token: str) -> Challenge:
    """The challenge ``token`` answers; ``invalid_mfa_token`` if unknown or dead."""
    row = (
        get_session()
        .execute(
            select(MfaToken.id, MfaToken.user_id).where(
                MfaToken.token_hash == _hash(token), *_token_is_live(clock.now())
            )
        )
        .first()
    )
    if row is None:
        raise Problem(Code.INVALID_MFA_TOKEN)
    return Challenge(row.id, row.user_id)


def count_wrong_code(challenge: Challenge) -> None:
    """One more wrong code with this mfa_token; the fifth burns it."""
    db = get_session()
    db.execute(
        update(MfaToken)
        .where(MfaToken.id == challenge.id, MfaToken.used_at.is_(None))
        .values(attempts=MfaToken.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    db.commit()


def spend_challenge(db: Session, challenge: Challenge) -> bool:
    """Use the mfa_token up, uncommitted; ``False`` if it died meanwhile."""
    now = clock.now()
    return (
        rowcount(
            db.execute(
                update(MfaToken)
                .where(MfaToken.id == challenge.id, *_token_is_live(now))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


# --- codes --------------------------------------------------------------------


def accept_code(db: Session, user_id: uuid.UUID, code: str) -> str | None:
    """Spend a TOTP code or a recovery code of the user's factor, uncommitted.

    Returns which it was (``"totp"`` or ``"recovery"``), or ``None`` for a
    wrong, used or malformed code; the caller commits or rolls back.
    """
    compact = "".join(code.split())
    now = clock.now()
    if otp.is_totp_code(compact):
        sealed = db.scalar(select(MfaFactor.secret).where(MfaFactor.user_id == user_id))
        if sealed is None:
            return None
        step = otp.matching_step(_open(user_id, sealed), compact, now)
        if step is None:
            return None
        spent = db.execute(
            update(MfaFactor)
            .where(
                MfaFactor.user_id == user_id,
                MfaFactor.secret.is_not(None),
                MfaFactor.last_step < step,
            )
            .values(last_step=step, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return "totp" if rowcount(spent) == 1 else None
    key = otp.recovery_code_key(compact)
    if key is None:
        return None
    used = db.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == _hash(key),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return "recovery" if rowcount(used) == 1 else None


def _open(user_id: uuid.UUID, sealed: bytes) -> str:
    try:
        return _unseal(user_id, sealed)
    except SealError as exc:
        # The operator's doing (a changed secret), not the client's: a 500.
        raise RuntimeError(f"cannot open the TOTP secret of {user_id}: {exc}") from None


def replace_recovery_codes(db: Session, user_id: uuid.UUID) -> list[str]:
    """Ten new recovery codes, uncommitted; the user's old ones stop working."""
    codes = otp.new_recovery_codes()
    now = clock.now()
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    db.add_all(
        RecoveryCode(
            user_id=user_id,
            code_hash=_hash(otp.recovery_code_key(code) or code),
            created_at=now,
        )
        for code in codes
    )
    return codes


def recovery_codes_left(user_id: uuid.UUID) -> int:
    """How many of the user's recovery codes are still unused."""
    count = get_session().scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)


# --- enrolment and removal ----------------------------------------------------


def begin_enrolment(user_id: uuid.UUID) -> str:
    """Make a new pending secret for the user, replacing a pending one; return it."""
    secret = otp.new_secret()
    now = clock.now()
    db = get_session()
    values = {"pending_secret": _seal(user_id, secret), "updated_at": now}
    pending = update(MfaFactor).where(MfaFactor.user_id == user_id).values(**values)
    if rowcount(db.execute(pending.execution_options(synchronize_session=False))):
        db.commit()
        return secret
    db.add(MfaFactor(user_id=user_id, last_step=0, created_at=now, **values))
    try:
        db.commit()
    except IntegrityError:
        # Another enrolment of the same user made the row first: replace its secret.
        db.rollback()
        db.execute(pending.execution_options(synchronize_session=False))
        db.commit()
    return secret


def confirm_enrolment(db: Session, user_id: uuid.UUID, code: str) -> None:
    """Turn the pending secret on with its first code, uncommitted.

    ``mfa_not_enabled`` when nothing is pending (or the factor is on already),
    ``invalid_mfa_code`` for a wrong code. The pending secret, its step and
    ``users.mfa_enabled`` change in conditional statements of one transaction.
    """
    row = db.execute(
        select(MfaFactor.pending_secret).where(
            MfaFactor.user_id == user_id,
            MfaFactor.pending_secret.is_not(None),
            MfaFactor.secret.is_(None),
        )
    ).first()
    if row is None:
        raise Problem(Code.MFA_NOT_ENABLED)
    pending: bytes = row.pending_secret
    now = clock.now()
    step = otp.matching_step(_open(user_id, pending), "".join(code.split()), now)
    if step is None:
        raise Problem(Code.INVALID_MFA_CODE)
    turned_on = db.execute(
        update(MfaFactor)
        .where(
            MfaFactor.user_id == user_id,
            MfaFactor.pending_secret == pending,
            MfaFactor.secret.is_(None),
        )
        .values(secret=pending, pending_secret=None, last_step=step, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    flagged = db.execute(
        update(User)
        .where(User.id == user_id, User.mfa_enabled.is_(False))
        .values(
            mfa_enabled=True,
            updated_at=now,
            # A login racing this one opens no password-only session after it.
            account_version=User.account_version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(turned_on) != 1 or rowcount(flagged) != 1:
        db.rollback()
        raise Problem(Code.INVALID_MFA_CODE)


def remove(db: Session, user_id: uuid.UUID) -> bool:
    """Take the user's factor, recovery codes and mfa_tokens away, uncommitted.

    ``False``, changing nothing, when the factor is not on. Outstanding logins
    of the user that were waiting for a code open no session afterwards.
    """
    flagged = db.execute(
        update(User)
        .where(User.id == user_id, User.mfa_enabled.is_(True))
        .values(
            mfa_enabled=False,
            updated_at=clock.now(),
            account_version=User.account_version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(flagged) != 1:
        return False
    db.execute(delete(MfaFactor).where(MfaFactor.user_id == user_id))
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    db.execute(delete(MfaToken).where(MfaToken.user_id == user_id))
    return True


def prune_challenges() -> int:
    """Delete mfa_tokens that expired over a day ago; return how many."""
    db = get_session()
    deleted = rowcount(
        db.execute(
            delete(MfaToken).where(
                MfaToken.expires_at < clock.now() - timedelta(days=1)
            )
        )
    )
    db.commit()
    return deleted
