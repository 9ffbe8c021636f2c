"""Seeding authsvc's database directly, with the service's own models and helpers.

Rows are bulk-inserted with SQLAlchemy Core, in the form the service writes
them: usernames and e-mails beside their canonical keys (``users.canonical``),
refresh tokens stored as ``tokens.hash_opaque_token`` of a
``tokens.new_opaque_token``, lifetimes from the app's settings. Every seeded
account shares one argon2 hash of the bench password, made once, which keeps a
million accounts a matter of minutes.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import cycle
from typing import Any

from flask import Flask
from sqlalchemy import insert

from authsvc import clock, registration
from authsvc.keys import get_keys
from authsvc.models import AuthSession, RefreshToken, User
from authsvc.passwords import get_passwords
from authsvc.tokens import hash_opaque_token, new_opaque_token
from authsvc.users import canonical

#: Accounts (or sessions) per transaction.
BATCH = 20_000

Rows = list[dict[str, Any]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Identity:
    """A seeded session and its user: what an access token names."""

    user_id: uuid.UUID
    username: str
    session_id: uuid.UUID


@dataclass
class Seeded:
    """What a seeding kept: some sessions' identities and plaintext refresh tokens."""

    identities: list[Identity] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


def _batches(count: int) -> Iterator[range]:
    for start in range(0, count, BATCH):
        yield range(start, min(start + BATCH, count))


class Seeder:
    """Writes accounts, sessions and refresh tokens into ``app``'s database."""

    def __init__(self, app: Flask, password: str) -> None:
        self.app = app
        self.password = password
        self.engine = app.extensions["authsvc.db"].engine
        self.accounts = 0
        with app.app_context():
            self.password_hash = get_passwords().hash(password)

    def bench_user(self, username: str) -> None:
        """Register the user that logs in, through the service's own use case."""
        with self.app.app_context():
            registration.create_user(username, self.password)

    def seed_accounts(
        self, count: int, *, keep_every: int = 1, progress: Progress | None = None
    ) -> Seeded:
        """Add ``count`` users, each with one live session and refresh token.

        Identities and plaintext tokens are kept for every ``keep_every``-th
        account, spread evenly over the new rows.
        """
        kept = Seeded()
        for batch in _batches(count):
            numbers = range(self.accounts + batch.start, self.accounts + batch.stop)
            users = self._user_rows(numbers)
            sessions, tokens, plaintext = self._session_rows([u["id"] for u in users])
            with self.engine.begin() as connection:
                connection.execute(insert(User), users)
                connection.execute(insert(AuthSession), sessions)
                connection.execute(insert(RefreshToken), tokens)
            for index in range(0, len(users), keep_every):
                user, session = users[index], sessions[index]
                identity = Identity(user["id"], user["username"], session["id"])
                kept.identities.append(identity)
                kept.tokens.append(plaintext[index])
            if progress:
                progress(batch.stop, count)
        self.accounts += count
        return kept

    def seed_sessions(self, owners: Sequence[Identity], count: int) -> list[str]:
        """Add ``count`` more sessions to ``owners``' users; their refresh tokens."""
        users = cycle(owner.user_id for owner in owners)
        plaintext: list[str] = []
        for batch in _batches(count):
            sessions, tokens, fresh = self._session_rows([next(users) for _ in batch])
            with self.engine.begin() as connection:
                connection.execute(insert(AuthSession), sessions)
                connection.execute(insert(RefreshToken), tokens)
            plaintext += fresh
        return plaintext

    def access_token(self, identity: Identity) -> str:
        """Sign an access token for a seeded session, as a login would."""
        with self.app.app_context():
            issued_at = int(time.time())
            return get_keys().sign(
                subject=str(identity.user_id),
                username=identity.username,
                session_id=str(identity.session_id),
                roles=[],
                issued_at=issued_at,
                expires_at=issued_at + self.app.config["ACCESS_TOKEN_TTL"],
            )

    def _user_rows(self, numbers: range) -> Rows:
        now = clock.system_clock()
        rows = []
        for number in numbers:
            username = f"user{number:07d}"
            email = f"{username}@bench.example"
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "username": username,
                    "username_key": canonical(username),
                    "email": email,
                    "email_key": canonical(email),
                    "password_hash": self.password_hash,
                    "is_active": True,
                    "roles": [],
                    "created_at": now,
                    "updated_at": now,
                    "password_changed_at": now,
                }
            )
        return rows

    def _session_rows(
        self, user_ids: Sequence[uuid.UUID]
    ) -> tuple[Rows, Rows, list[str]]:
        """A session per user id, each with an unspent refresh token."""
        now = clock.system_clock()
        ends = now + timedelta(seconds=self.app.config["SESSION_TTL"])
        idle = now + timedelta(seconds=self.app.config["REFRESH_TOKEN_TTL"])
        sessions, tokens, plaintext = [], [], []
        for user_id in user_ids:
            session_id = uuid.uuid4()
            token = new_opaque_token()
            sessions.append(
                {
                    "id": session_id,
                    "user_id": user_id,
                    "created_at": now,
                    "last_used_at": now,
                    "expires_at": ends,
                    "user_agent": "bench",
                    "ip_address": "127.0.0.1",
                }
            )
            tokens.append(
                {
                    "session_id": session_id,
                    "token_hash": hash_opaque_token(token),
                    "created_at": now,
                    "expires_at": min(idle, ends),
                }
            )
            plaintext.append(token)
        return sessions, tokens, plaintext


def verify_seconds(app: Flask, password: str, samples: int = 15) -> float:
    """Median time of one argon2 verification with the app's parameters."""
    with app.app_context():
        passwords = get_passwords()
        stored = passwords.hash(password)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            passwords.verify(stored, password)
            times.append(time.perf_counter() - started)
    return statistics.median(times)
