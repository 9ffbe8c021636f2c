"""Time ``authsvc sessions prune`` on a large table.

Seeds USERS users and SESSIONS sessions (each with one refresh token), half of
them revoked two days ago, into a fresh database, then prunes and prints the time.

    python bench/prune.py sqlite:////tmp/prune.db 1000000
    python bench/prune.py postgresql+psycopg://postgres@127.0.0.1/prune 1000000

The database must be empty (or absent, for SQLite); it is migrated first.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from authsvc import create_app
from authsvc.db import get_db, get_session
from authsvc.migrations import upgrade
from authsvc.models import AuthSession, RefreshToken, User
from authsvc.revocation import prune_sessions

USERS = 1000
CHUNK = 20_000


def seed(total: int) -> None:
    """Bulk-insert users, sessions and refresh tokens."""
    now = datetime.now(UTC)
    users = [
        {
            "id": uuid.uuid4(),
            "username": f"user{i}",
            "username_key": f"user{i}",
            "password_hash": "x",
            "is_active": True,
            "roles": [],
            "created_at": now,
            "updated_at": now,
            "password_changed_at": now,
        }
        for i in range(USERS)
    ]
    engine = get_db().engine
    with engine.begin() as connection:
        connection.execute(insert(User), users)
    revoked_at = now - timedelta(days=2)
    for start in range(0, total, CHUNK):
        sessions, tokens = [], []
        for i in range(start, min(start + CHUNK, total)):
            session_id = uuid.uuid4()
            sessions.append(
                {
                    "id": session_id,
                    "user_id": users[i % USERS]["id"],
                    "created_at": now,
                    "last_used_at": now,
                    "expires_at": now + timedelta(days=30),
                    "revoked_at": revoked_at if i % 2 else None,
                    "revoked_reason": "logout" if i % 2 else None,
                }
            )
            tokens.append(
                {
                    "session_id": session_id,
                    "token_hash": uuid.uuid4().hex + uuid.uuid4().hex,
                    "created_at": now,
                    "expires_at": now + timedelta(days=7),
                }
            )
        with engine.begin() as connection:
            connection.execute(insert(AuthSession), sessions)
            connection.execute(insert(RefreshToken), tokens)


def main() -> None:
    url, total = sys.argv[1], int(sys.argv[2])
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-" + "x" * 40})
    upgrade(app)
    with app.app_context():
        started = time.perf_counter()
        seed(total)
        print(f"seeded {total} sessions in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        pruned = prune_sessions()
        elapsed = time.perf_counter() - started
        left = get_session().scalar(select(func.count()).select_from(AuthSession))
        print(f"pruned {pruned} sessions in {elapsed:.1f} s; {left} live remain")


if __name__ == "__main__":
    main()
