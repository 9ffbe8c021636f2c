"""One-time codes: TOTP (RFC 6238, through pyotp) and recovery codes.

TOTP as authenticator apps make it: SHA-1, six digits, 30-second steps, a code
of the step before or after the current one accepted too (clocks drift). Which
step a code matched is returned, so the caller can refuse it, and every earlier
step, from then on. Pure functions of their arguments: the time is given.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime

import pyotp

STEP_SECONDS = 30
DIGITS = 6
#: Steps accepted either side of the current one.
WINDOW = 1
TOTP_CODE = re.compile(r"[0-9]{6}")

#: Recovery codes handed out at a time.
RECOVERY_CODES = 10
#: Lower-case letters and digits without look-alikes (0/o, 1/l/i).
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
#: Three groups of four: 12 characters of 31, about 59 bits each.
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LENGTH = 4
RECOVERY_CODE = re.compile(
    rf"[{RECOVERY_ALPHABET}]{{{RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH}}}"
)


def new_secret() -> str:
    """A fresh TOTP secret, base32 (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, *, username: str, issuer: str) -> str:
    """The ``otpauth://totp/<issuer>:<username>?secret=...&issuer=...`` URI."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def step_at(moment: datetime) -> int:
    """The number of the 30-second step ``moment`` falls in."""
    return int(moment.timestamp()) // STEP_SECONDS


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The step within the window around ``now`` whose code ``code`` is, or None.

    Every step of the window is compared, in constant time, so how long it takes
    does not tell which (if any) matched; the newest match wins.
    """
    if not TOTP_CODE.fullmatch(code):
        return None
    generator = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = step_at(now)
    matched = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        expected = generator.at(step * STEP_SECONDS)
        if hmac.compare_digest(expected.encode(), code.encode()):
            matched = step
    return matched


def is_totp_code(code: str) -> bool:
    """Whether ``code`` has the form of a TOTP code (else it may be a recovery code)."""
    return bool(TOTP_CODE.fullmatch(code.strip()))


def new_recovery_codes() -> list[str]:
    """Ten fresh recovery codes, as shown to the user: ``abcd-efgh-jkmn``."""
    return [_new_recovery_code() for _ in range(RECOVERY_CODES)]


def _new_recovery_code() -> str:
    chars = "".join(
        secrets.choice(RECOVERY_ALPHABET)
        for _ in range(RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH)
    )
    return "-".join(
        chars[start : start + RECOVERY_GROUP_LENGTH]
        for start in range(0, len(chars), RECOVERY_GROUP_LENGTH)
    )


def recovery_code_key(code: str) -> str | None:
    """The one form of a recovery code however it was typed, or None if it is none.

    Case, spaces and dashes do not matter.
    """
    key = re.sub(r"[\s-]", "", code).lower()
    return key if RECOVERY_CODE.fullmatch(key) else None
