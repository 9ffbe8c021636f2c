"""Passwords: argon2id hashing and verification, and the password policy."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app

from .errors import Busy

#: Longest password accepted, checked before any hashing work is done.
MAX_PASSWORD_LENGTH = 1024
#: How many of the most common passwords the policy refuses.
COMMON_PASSWORD_COUNT = 10_000


def normalize_password(password: str) -> str:
    """NFKC-normalise so the same password typed on any keyboard verifies."""
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a password against a stored hash."""

    ok: bool
    needs_rehash: bool = False


class Passwords:
    """Argon2id with the configured parameters; built once per app.

    At most ``concurrency`` hashes run at once per process, each holding
    ``memory_cost`` KiB: a flood of logins waits ``wait`` seconds at most for a
    turn and is then refused with ``service_unavailable`` instead of queueing
    without bound.
    """

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost: int,
        parallelism: int,
        concurrency: int = 4,
        wait: float = 1.0,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._slots = threading.BoundedSemaphore(concurrency)
        self._wait = wait

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait):
            raise Busy(1, "Too many logins at once; try again shortly.")
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        """Hash a password for storage."""
        with self._slot():
            return self._hasher.hash(normalize_password(password))

    def verify(self, stored_hash: str, password: str) -> Verification:
        """Check ``password``; say whether today's cost calls for a new hash."""
        try:
            with self._slot():
                self._hasher.verify(stored_hash, normalize_password(password))
        except (VerificationError, InvalidHashError, ValueError):
            # ValueError: a stored hash that is not even ASCII.
            return Verification(ok=False)
        stale = self._hasher.check_needs_rehash(stored_hash)
        return Verification(ok=True, needs_rehash=stale)

    def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification when there is no user to check."""
        self.verify(self._dummy_hash, password)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash("authsvc dummy password for timing")


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships a frequency-ranked list; loaded on first use to keep workers small.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"][:COMMON_PASSWORD_COUNT])


def password_problem(password: str, *, username: str, min_length: int) -> str | None:
    """Say what is wrong with a new password under the policy, or ``None``."""
    password = normalize_password(password)
    if len(password) < min_length:
        return f"must be at least {min_length} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    folded = password.casefold()
    if folded in _common_passwords():
        return "is too common"
    if username and username.casefold() in folded:
        return "must not contain the username"
    return None


def init_app(app: Flask) -> None:
    """Build the app's hasher once, from its configured argon2id cost."""
    app.extensions["authsvc.passwords"] = Passwords(
        time_cost=app.config["ARGON2_TIME_COST"],
        memory_cost=app.config["ARGON2_MEMORY_COST"],
        parallelism=app.config["ARGON2_PARALLELISM"],
        concurrency=app.config["HASH_CONCURRENCY"],
    )


def get_passwords() -> Passwords:
    """Return the current app's hasher."""
    passwords: Passwords = current_app.extensions["authsvc.passwords"]
    return passwords
