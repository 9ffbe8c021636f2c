"""Account recovery and e-mail checks: forgot and reset a password, verify and
change an address.

Requests only queue messages (:mod:`authsvc.outbox`); the sender resolves the
account and makes the code when it sends (:mod:`authsvc.mail_sender`). So a
forgotten-password request does the same work for every address, known,
unknown or disabled: it validates, counts against the client's and the
address's limits, and queues one row. Codes and link tokens are checked and
spent by :mod:`authsvc.codes`, in the same transaction as the change they pay
for. Nothing here knows about HTTP.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import accounts, audit, clock, codes, outbox, registration, revocation
from .codes import Purpose
from .db import get_session
from .errors import Code, Problem
from .models import OneTimeCode, User
from .outbox import MessageKind
from .passwords import get_passwords
from .principal import Principal
from .throttle import Kind, get_throttle
from .users import canonical, find_user, normalize

INVALID_EMAIL = "must be a valid e-mail address"
#: Longer addresses are the schema's to refuse, with its own message.
MAX_EMAIL_LENGTH = 254


def email_errors(email: object, field: str = "email") -> dict[str, str]:
    """What is wrong with an address given as text, under its field's name."""
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH:
        return {}
    if not registration.is_valid_email(normalize(email)):
        return {field: INVALID_EMAIL}
    return {}


def forgot(email: str, *, address: str | None) -> None:
    """Queue a reset message for ``email``, whoever has it; 429 only per client.

    Nothing is looked up: the sender finds the account, if any, when it sends.
    """
    get_throttle().attempt(Kind.MAIL_CLIENT, address)
    if outbox.queue(MessageKind.RESET, normalize(email)):
        get_session().commit()
    audit.record("password_reset_requested")


def reset(
    new_password: str,
    *,
    email: str | None = None,
    code: str | None = None,
    token: str | None = None,
) -> None:
    """Set a new password with a reset code or link; every session is revoked.

    A new password against the policy is refused before the code is spent, so
    the code stays usable. A second factor, if any, stays as it is.
    """
    row = _found(Purpose.RESET, email=email, code=code, token=token)
    user = _owner(row)
    errors = registration.new_password_errors(
        new_password, username=user.username, field="new_password"
    )
    if errors:
        raise Problem(Code.VALIDATION_ERROR, errors=errors)
    password_hash = get_passwords().hash(new_password)
    if user.email:
        # Counted before the write transaction begins: the notice always goes.
        outbox.count_address(user.email)
    codes.spend(row)
    now = clock.now()
    user.password_hash = password_hash
    user.password_changed_at = user.updated_at = now
    user.account_version = User.account_version + 1
    if user.email:
        outbox.add(MessageKind.PASSWORD_RESET, user.email, user.id)
    # Commits the spent code, the password, the notice and the revocations at once.
    revocation.revoke_user_sessions(user.id, reason="password_reset")
    audit.record("password_reset", user_id=user.id)


def request_verification(principal: Principal, *, address: str | None) -> None:
    """Queue a verification message to the caller's address."""
    user = find_user(principal.id)
    if user.email is None:
        raise Problem(
            Code.VALIDATION_ERROR,
            "The account has no e-mail address.",
            errors={"email": "the account has no e-mail address"},
        )
    if user.email_verified:
        raise Problem(Code.ALREADY_VERIFIED)
    get_throttle().attempt(Kind.MAIL_CLIENT, address)
    if outbox.queue(MessageKind.VERIFY, user.email, user.id):
        get_session().commit()


def verify(
    *, email: str | None = None, code: str | None = None, token: str | None = None
) -> User:
    """Mark an address verified with its code or link; return the user.

    A link of an e-mail change works here too: it proves the new address, and
    the change was asked for with the account's password.
    """
    purposes = (Purpose.VERIFY, Purpose.CHANGE) if token is not None else ()
    row = _found(Purpose.VERIFY, email=email, code=code, token=token, also=purposes)
    return _apply(row)


def change_email(
    principal: Principal, email: str, password: str, *, address: str | None
) -> None:
    """Queue a confirmation to a new address, and a notice to the old one.

    The address changes only when the new one confirms it.
    """
    user = find_user(principal.id)
    accounts.check_password(user, password, address=address)
    email = normalize(email)
    taken = get_session().scalar(
        select(User.id).where(User.email_key == canonical(email), User.id != user.id)
    )
    if taken is not None:
        raise Problem(Code.ALREADY_EXISTS, "The e-mail address is already taken.")
    get_throttle().attempt(Kind.MAIL_CLIENT, address)
    if outbox.queue(MessageKind.CHANGE, email, user.id):
        if user.email:
            outbox.notify(MessageKind.EMAIL_CHANGE, user.email, user.id)
        get_session().commit()
    audit.record("email_change_requested", user_id=user.id)


def confirm_change(
    principal: Principal, *, code: str | None = None, token: str | None = None
) -> User:
    """Apply the caller's pending e-mail change with its code or link."""
    user = find_user(principal.id)
    if token is not None:
        row = codes.by_token(token, (Purpose.CHANGE,))
        if row.user_id != user.id:
            raise Problem(Code.INVALID_CODE)
    else:
        row = codes.by_code(user.id, Purpose.CHANGE, code or "")
    return _apply(row)


def _found(
    purpose: Purpose,
    *,
    email: str | None,
    code: str | None,
    token: str | None,
    also: tuple[Purpose, ...] = (),
) -> OneTimeCode:
    """The live code row a request names, by link token or by address and code."""
    if token is not None:
        return codes.by_token(token, also or (purpose,))
    user_id = get_session().scalar(
        select(User.id).where(User.email_key == canonical(email or ""))
    )
    return codes.by_code(user_id, purpose, code or "")


def _owner(row: OneTimeCode) -> User:
    user = get_session().get(User, row.user_id)
    if user is None or not user.is_active:
        raise Problem(Code.INVALID_CODE)
    return user


def _apply(row: OneTimeCode) -> User:
    """Spend a verification or change code and make its address the verified one."""
    user = _owner(row)
    if row.purpose == Purpose.VERIFY and user.email_key != canonical(row.email):
        raise Problem(Code.INVALID_CODE)  # the account has another address by now
    codes.spend(row)
    user.email = row.email
    user.email_key = canonical(row.email)
    user.email_verified = True
    user.updated_at = clock.now()
    db = get_session()
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise Problem(
            Code.ALREADY_EXISTS, "The e-mail address is already taken."
        ) from None
    audit.record("email_verified", user_id=user.id, purpose=row.purpose)
    return user
